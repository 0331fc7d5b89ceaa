"""``report.html``: one self-contained page of a ``compare`` folder, to look at and send.

Inline SVG figures (accuracy versus shots per dataset), the tables, the best adapter's per-class
accuracy, the feature diagnostics (modality gap, text margin) and the provenance (recipe,
versions, weights identities, row count). No external assets: it opens offline. Built from the
folder's files alone, so ``adaptkit report OUTPUT_DIR`` rebuilds it at any time.
"""

from __future__ import annotations

import html
import io
import json
import os
from collections import defaultdict
from pathlib import Path

import matplotlib

from ._version import __version__
from .plots import accuracy_vs_shots
from .results import backbone_label, markdown_tables, read_results, summarize
from .storage import expand_path, read_text, write_text

STYLE = """body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .75rem 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: .2rem .5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.figure svg { max-width: 100%; height: auto; }
.note { color: #555; } code { background: #f3f3f3; padding: 0 .2rem; }"""


def _svg(figure) -> str:
    """A matplotlib figure as an inline <svg> element (text as paths: no fonts needed)."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "adaptkit"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _table_html(markdown: str) -> str:
    """Markdown pipe tables (and the lines between them) as HTML."""
    out, table = [], []

    def flush():
        if table:
            head, *body = [[html.escape(c.strip()) for c in line.strip().strip("|").split("|")] for line in table
                           if not set(line.replace("|", "").strip()) <= set("-: ")]
            out.append("<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr></thead><tbody>" +
                       "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body) +
                       "</tbody></table>")
            table.clear()

    for line in markdown.splitlines():
        if line.strip().startswith("|"):
            table.append(line)
            continue
        flush()
        heading = line.strip().lstrip("#")
        if line.strip().startswith("#"):
            out.append(f"<h3>{html.escape(heading.strip())}</h3>")
        elif line.strip():
            out.append(f"<p class='note'>{html.escape(line.strip())}</p>")
    flush()
    return "\n".join(out)


def _per_class(rows: list[dict], reports: dict) -> str:
    """For each dataset and backbone: the best adapter at the largest shot count (mean top-1 over
    seeds) and its per-class accuracy, averaged over seeds."""
    summary = summarize(rows)
    blocks = []
    for backbone, dataset in sorted({(backbone_label(r["backbone"]), r["dataset"]) for r in rows}):
        shots = max(r["shots"] for r in rows if r["dataset"] == dataset and backbone_label(r["backbone"]) == backbone)
        candidates = {a: cells[dataset][0] for (b, k, a), cells in summary.items()
                      if b == backbone and k == shots and dataset in cells}
        best = max(candidates, key=candidates.get)
        chosen = [r for r in rows if (r["dataset"], backbone_label(r["backbone"]), r["adapter"], r["shots"]) ==
                  (dataset, backbone, best, shots) and isinstance(r.get("per_class_accuracy"), list)]
        title = (f"<h3>{html.escape(dataset)} / {html.escape(backbone)}: {html.escape(best)} at {shots} shots "
                 f"({100 * candidates[best]:.2f} % top-1)</h3>")
        if not chosen:
            blocks.append(title + "<p class='note'>per-class accuracy not recorded in these rows</p>")
            continue
        per_class = [sum(values) / len(values) for values in zip(*(r["per_class_accuracy"] for r in chosen))]
        names = _classnames(reports, dataset, len(per_class))
        cells = "".join(f"<tr><td>{html.escape(n)}</td><td>{100 * v:.1f}</td></tr>"
                        for n, v in sorted(zip(names, per_class), key=lambda item: item[1]))
        blocks.append(title + f"<table><thead><tr><th>class</th><th>accuracy (%), mean over {len(chosen)} seed(s)"
                              f"</th></tr></thead><tbody>{cells}</tbody></table>")
    return "\n".join(blocks)


def _classnames(reports: dict, dataset: str, n_classes: int) -> list[str]:
    """The dataset's class names as its diagnostics record them (per-class zero-shot accuracy)."""
    for key, report in reports.items():
        names = list(report.get("per_class_zero_shot_accuracy", {})) if key.startswith(f"{dataset} / ") else []
        if len(names) == n_classes:
            return names
    return [f"class {i}" for i in range(n_classes)]


def _diagnostics(reports: dict) -> str:
    if not reports:
        return "<p class='note'>no diagnostics recorded</p>"
    keys = sorted({k for report in reports.values() for k, v in report.items() if isinstance(v, (int, float))})
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr><td>" + html.escape(name) + "</td>" + "".join(
        f"<td>{report[k]:.4g}</td>" if isinstance(report.get(k), (int, float)) else "<td>–</td>" for k in keys) +
        "</tr>" for name, report in sorted(reports.items()))
    return f"<table><thead><tr><th>dataset / backbone</th>{head}</tr></thead><tbody>{body}</tbody></table>"


def build_report(output: str | os.PathLike) -> Path:
    """Write ``report.html`` into a ``compare`` output folder from its files; returns its path."""
    out = expand_path(output, "output")
    results = out / "results.jsonl"
    if not results.is_file():
        raise FileNotFoundError(f"{out} holds no results.jsonl: run adaptkit compare with --output {out} first")
    rows, problems = read_results(results)
    if not rows:
        raise ValueError(f"{results} holds no result rows")
    recipe = json.loads(read_text(out / "recipe.json", "recipe record")) if (out / "recipe.json").is_file() else {}
    reports = json.loads(read_text(out / "diagnostics.json", "diagnostics file")) \
        if (out / "diagnostics.json").is_file() else {}
    matplotlib.use("Agg")
    figures = "".join(f"<h3>{html.escape(b)}</h3><div class='figure'>{_svg(accuracy_vs_shots(rows, b))}</div>"
                      for b in sorted({backbone_label(r["backbone"]) for r in rows}))
    versions = sorted({r.get("adaptkit", "?") for r in rows})
    weights = defaultdict(set)
    for row in rows:
        weights[row["backbone"]["model"]].add(row["backbone"]["weights"])
    provenance = (f"<p>{len(rows)} result rows ({len(problems)} lines left out), written by adaptkit "
                  f"{html.escape(', '.join(versions))}; this page by adaptkit {__version__}.</p><p>Weights: " +
                  "; ".join(f"<code>{html.escape(m)}</code>: {html.escape(', '.join(sorted(w)))}"
                            for m, w in sorted(weights.items())) + "</p><h3>Recipe</h3><pre>" +
                  html.escape(json.dumps(recipe, indent=1)) + "</pre>")
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
            f"<title>adaptkit report: {html.escape(out.name)}</title><style>{STYLE}</style></head><body>"
            f"<h1>adaptkit report: {html.escape(out.name)}</h1>"
            f"<h2>Accuracy versus shots</h2>{figures}<h2>Tables</h2>{_table_html(markdown_tables(rows))}"
            f"<h2>Best adapter per class</h2>{_per_class(rows, reports)}"
            f"<h2>Feature diagnostics</h2>{_diagnostics(reports)}<h2>Provenance</h2>{provenance}</body></html>\n")
    path = out / "report.html"
    write_text(path, page)
    return path
