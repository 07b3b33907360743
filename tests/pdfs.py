"""Real documents for tests: PDFs printed by Chromium, Word files from python-docx, scans from Pillow.

Nothing here is committed as a fixture; every file is made from text at test time.
"""
from __future__ import annotations

import html
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TESSERACT = shutil.which("tesseract")


def write_pdf(path: Path, pages: list[str]) -> Path:
    """A PDF with one short text per page (matplotlib's PDF backend, no browser needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path) as pdf:
        for text in pages:
            fig = plt.figure()
            fig.text(0.05, 0.5, text)
            pdf.savefig(fig)
            plt.close(fig)
    return path


def report_html(title: str, paragraphs: list[str], *, columns: int = 1,
                table: list[list[str]] | None = None, heading: bool = True) -> str:
    """A plain report page: justified paragraphs, optionally in two columns and after a table."""
    css = ("body{font-family:'DejaVu Serif',serif;font-size:11pt;text-align:justify;margin:0}"
           "h1{font-size:16pt}p{margin:0 0 0.8em 0}"
           f"main{{column-count:{columns};column-gap:2.5em}}"
           "table{border-collapse:collapse;margin:1em 0}td{padding:2px 14px;text-align:right}"
           "td:first-child{text-align:left}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{css}</style></head><body>"]
    if heading:
        parts.append(f"<h1>{html.escape(title)}</h1>")
    if table:
        parts.append("<table>" + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                                         for row in table) + "</table>")
    parts.append("<main>" + "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs) + "</main></body></html>")
    return "".join(parts)


def print_to_pdf(markup: str, target: Path, header_footer: bool = False) -> Path:
    """Print an HTML page to PDF with headless Chromium (as a user's browser would).

    ``header_footer`` keeps Chromium's running header (date, title) and footer (address, page "1/3").
    """
    if CHROMIUM is None:
        raise RuntimeError("chromium is not installed")
    with tempfile.TemporaryDirectory(prefix="qa-chromium-") as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(markup, encoding="utf-8")
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               *([] if header_footer else ["--no-pdf-header-footer"]), f"--user-data-dir={tmp}/profile", f"--print-to-pdf={target}",
               page.as_uri()]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    if not target.exists() or target.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no PDF to {target}")
    return target


def seed_paragraphs(path: Path) -> list[str]:
    """The paragraphs of a seed report (blank-line separated)."""
    text = path.read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def write_docx(target: Path, title: str, paragraphs: list[str], table: list[list[str]] | None = None,
               heading: bool = True) -> Path:
    """A Word file with a heading, body paragraphs and an optional table (python-docx)."""
    import docx

    document = docx.Document()
    document.core_properties.title = title
    if heading:
        document.add_heading(title, level=1)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, cell in enumerate(row):
                grid.cell(r, c).text = cell
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    document.save(target)
    return target


def scan_pdf(source: Path, target: Path, dpi: int = 200) -> Path:
    """Each page of ``source`` rendered to a grey image, saved as an image-only PDF (a "scan")."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(source))
    try:
        images = [pdf[i].render(scale=dpi / 72).to_pil().convert("L") for i in range(len(pdf))]
    finally:
        pdf.close()
    images[0].save(target, "PDF", resolution=dpi, save_all=True, append_images=images[1:])
    return target
