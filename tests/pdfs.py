"""Real PDF files for tests, written with matplotlib's PDF backend (text per page)."""
from pathlib import Path


def write_pdf(path: Path, pages: list[str]) -> Path:
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
