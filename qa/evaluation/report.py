"""Reports of an eval run: the table, a diff against a past run, files on disk and a chart."""
from __future__ import annotations

import json
from pathlib import Path

KS = (1, 3, 5, 10)
HEADLINE = ("answer_recall", "citation_precision", "citation_recall", "abstention_recall")


def format_table(summary: dict) -> str:
    """A QA set's summary as a fixed-width table, one row per kind."""
    cols = ["answer_recall", "citation_precision", "citation_recall", "quote_exact", "abstention_recall",
            "abstention_precision", "false_abstentions"]
    head = f"{'kind':<13}{'n':>4} " + " ".join(f"{c[:14]:>14}" for c in cols) + f" {'ev@5':>6}"
    lines = [head]
    for name, block in [("ALL", summary)] + sorted(summary["by_kind"].items()):
        cells = " ".join(f"{fmt(block.get(c)):>14}" for c in cols)
        lines.append(f"{name:<13}{block['items']:>4} {cells} {fmt(block['evidence_recall@k']['5']):>6}")
    lines.append(f"latency p50 {summary['latency_p50_ms']} ms, p95 {summary['latency_p95_ms']} ms")
    return "\n".join(lines)


def format_diff(before: dict, after: dict) -> str:
    """Headline metrics of two runs side by side, with the change."""
    lines = ["metric                      before    after   change"]
    for key in ("answer_recall", "citation_precision", "citation_recall", "quote_exact", "abstention_recall",
                "abstention_precision", "latency_p50_ms"):
        a, b = before.get(key), after.get(key)
        change = f"{b - a:+.4f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) else ""
        lines.append(f"{key:<26}{fmt(a):>8} {fmt(b):>8} {change:>8}")
    return "\n".join(lines)


def write_outputs(out: Path, summary: dict, rows: list[dict]) -> None:
    """summary.json, items.jsonl, report.md and (for QA sets) chart.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    with open(out / "items.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    failures = [r for r in rows if "kind" in r and ((r.get("answer_recall", 1) or 0) < 1
                or (r.get("citation_precision") or 1) < 1 or (r["kind"] == "unanswerable") != r["abstained"])]
    md = ["# Eval report", "", f"Set: `{summary.get('set', '')}`", ""]
    if "by_kind" in summary:
        md += ["```", format_table(summary), "```", "", f"## Items needing attention ({len(failures)})", ""]
        for r in failures:
            md.append(f"- **{r['id']}** {r['question']} → {r['answer'][:200]!r} "
                      f"(recall {r.get('answer_recall')}, precision {r.get('citation_precision')}, "
                      f"abstained {r['abstained']})")
    else:
        md += ["```", json.dumps(summary, indent=1), "```"]
    (out / "report.md").write_text("\n".join(md) + "\n")
    if "by_kind" in summary:
        draw_chart(summary, out / "chart.png")


def draw_chart(summary: dict, target: Path) -> None:
    """Per-kind bars of the four headline metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted(summary["by_kind"])
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.2
    for i, metric in enumerate(HEADLINE):
        values = [summary["by_kind"][k].get(metric) or 0 for k in kinds]
        ax.bar([x + i * width for x in range(len(kinds))], values, width, label=metric.replace("_", " "))
    ax.set_xticks([x + 1.5 * width for x in range(len(kinds))], kinds)
    ax.set_ylim(0, 1.05)
    ax.set_title("Per-kind metrics")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


def fmt(value) -> str:
    """A metric for a table cell."""
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
