"""Regenerate the figures README and the quick-start notebook show, from the code as it is.

``python -m tools.docs`` (from a clone) runs the demo recipe, writes its table into README
between the ``<!-- demo-table -->`` markers and its figure to ``docs/``, and re-executes
``notebooks/quickstart.ipynb`` in a scratch folder, storing outputs with scratch paths replaced.
It also takes the screenshots README shows of ``adaptkit serve``'s page (an uploaded digit and
its five bars) and of the demo's ``report.html``, in headless Chromium (``--skip-screenshots``
leaves them). ``--check`` recomputes the table and exits 1 when README's differs. The notebook step needs the
``dev`` extra (nbclient).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
DEMO_RECIPE = REPOSITORY / "recipes" / "demo.toml"
README = REPOSITORY / "README.md"
NOTEBOOK = REPOSITORY / "notebooks" / "quickstart.ipynb"
FIGURE = REPOSITORY / "docs" / "demo_accuracy_vs_shots.png"
PAGE_SCREENSHOT = REPOSITORY / "docs" / "serve_page.png"
REPORT_SCREENSHOT = REPOSITORY / "docs" / "report.png"
TABLE_BLOCK = re.compile(r"(<!-- demo-table -->\n)(.*?)(\n<!-- /demo-table -->)", re.S)
NOTEBOOK_OUTPUT_FORBIDDEN = ("Warning", "WARNING", "Traceback")
CELL = re.compile(r"(-?\d+\.\d+) ± (\d+\.\d+)")
FLIPS_PER_SEED = 3
"""Test images whose prediction a CPU's kernels may flip, per seed and cell. Measured: AVX-512
and AVX2 float32 kernels (``ATEN_CPU_CAPABILITY=avx2``) disagree on at most 2 of the 540 digits
test images per seed (a near tie in a logit, or a near tie that moves the tuned point)."""


def _need_clone() -> None:
    missing = [p for p in (DEMO_RECIPE, README, NOTEBOOK) if not p.exists()]
    if missing:
        raise FileNotFoundError(f"tools.docs works on a clone of the repository; missing {missing[0]}")


@contextmanager
def _scratch_cache():
    """A fresh feature cache, so the documented numbers never come from stale entries."""
    previous = os.environ.get("ADAPTKIT_CACHE")
    with tempfile.TemporaryDirectory(prefix="adaptkit-docs-") as scratch:
        os.environ["ADAPTKIT_CACHE"] = str(Path(scratch) / "cache")
        try:
            yield Path(scratch)
        finally:
            if previous is None:
                os.environ.pop("ADAPTKIT_CACHE", None)
            else:
                os.environ["ADAPTKIT_CACHE"] = previous


def demo_rows(progress: bool = False, keep_report: Path | None = None) -> list[dict]:
    """Result rows of ``recipes/demo.toml``, computed from scratch; ``keep_report``: copy the
    run's report.html there."""
    import shutil

    from adaptkit.protocol import compare
    from adaptkit.recipes import load_recipe

    _need_clone()
    with _scratch_cache() as scratch:
        rows = compare(load_recipe(DEMO_RECIPE), output=str(scratch / "out"), progress=progress).rows
        if keep_report is not None:
            shutil.copy(scratch / "out" / "report.html", keep_report)
        return rows


def _browser(width: int, height: int):
    import shutil

    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))


def take_screenshots(report: Path) -> None:
    """docs/serve_page.png (the page of a server on the demo's data, one digit uploaded) and
    docs/report.png (the top of the demo's report.html)."""
    import threading
    import time

    import uvicorn
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    import adaptkit as ak
    from adaptkit.serve import ServeConfig, create_app, load_predictor

    with _scratch_cache() as scratch:
        tiny = ak.Backbone(ak.TINY, device="cpu")
        digits = ak.datasets.load("digits")
        support = ak.extract(tiny, digits.few_shot(16, 1), views=10, seed=1, progress=False)
        text = tiny.text_classifier(digits.classnames, digits.templates)
        ak.GDA(alpha=100.0, device="cpu").fit(support.features, support.labels, text_weights=text).save(
            scratch / "digits-gda.safetensors", classnames=digits.classnames, backbone=tiny)
        image = scratch / "a-three.png"
        test = digits.split("test")
        three = next(i for i in range(len(test)) if test.labels[i] == 3)
        test.load(three).resize((96, 96), Image.NEAREST).save(image)
        model, sha256 = load_predictor(scratch / "digits-gda.safetensors", device="cpu")
        server = uvicorn.Server(uvicorn.Config(create_app(model, ServeConfig(), adapter_sha256=sha256),
                                               host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        browser = _browser(900, 560)
        try:
            browser.get(f"http://127.0.0.1:{port}/")
            WebDriverWait(browser, 20).until(lambda d: "gda" in d.find_element(By.ID, "card").text)
            browser.find_element(By.ID, "files").send_keys(str(image))
            WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".result .bar")) == 5)
            browser.save_screenshot(str(PAGE_SCREENSHOT))
            browser.set_window_size(1100, 900)
            browser.get(report.resolve().as_uri())
            browser.save_screenshot(str(REPORT_SCREENSHOT))
        finally:
            browser.quit()
            server.should_exit = True
            thread.join(timeout=30)


def demo_table(rows: list[dict]) -> str:
    """The README block: top-1 test accuracy (%) per adapter and shot count on digits."""
    from adaptkit.results import summary_table

    return summary_table(rows)


def readme_table(readme: str) -> str:
    """The demo table README shows now."""
    match = TABLE_BLOCK.search(readme)
    if match is None:
        raise ValueError(f"{README} has no <!-- demo-table --> ... <!-- /demo-table --> block")
    return match.group(2)


def table_cells(table: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(adapter, column) -> (mean, std) in percent, from a :func:`demo_table` block."""
    lines = [line.strip().strip("|").split("|") for line in table.strip().splitlines()]
    columns = [c.strip() for c in lines[0][1:]]
    cells = {}
    for parts in lines[2:]:
        for column, cell in zip(columns, parts[1:]):
            match = CELL.fullmatch(cell.strip())
            if match:
                cells[parts[0].strip(), column] = (float(match.group(1)), float(match.group(2)))
    return cells


def table_differences(documented: str, fresh: str, n_test: int, n_seeds: int) -> list[str]:
    """Cells of ``documented`` that differ from ``fresh`` by more than CPU kernels explain.

    Each seed's accuracy may move by ``FLIPS_PER_SEED / n_test``: the mean of the seeds by as
    much, their sample standard deviation by at most sqrt(n / (n − 1)) times as much; both are
    shown to two decimals (±0.01). A cell present in one table only is a difference too."""
    step = 100 * FLIPS_PER_SEED / n_test
    mean_tolerance = step + 0.01
    std_tolerance = step * (n_seeds / (n_seeds - 1)) ** 0.5 + 0.01 if n_seeds > 1 else 0.01
    old, new = table_cells(documented), table_cells(fresh)
    problems = [f"{cell}: only in {'README' if cell in old else 'the fresh run'}" for cell in sorted(set(old) ^ set(new))]
    for cell in sorted(set(old) & set(new)):
        (mean_a, std_a), (mean_b, std_b) = old[cell], new[cell]
        if abs(mean_a - mean_b) > mean_tolerance or abs(std_a - std_b) > std_tolerance:
            problems.append(f"{cell}: README {mean_a:.2f} ± {std_a:.2f}, fresh {mean_b:.2f} ± {std_b:.2f} "
                            f"(tolerance {mean_tolerance:.2f} ± {std_tolerance:.2f})")
    return problems


def demo_differences(rows: list[dict]) -> list[str]:
    """README's demo table against ``rows`` of a fresh run (see :func:`table_differences`)."""
    from adaptkit.recipes import load_recipe

    recipe = load_recipe(DEMO_RECIPE)
    n_test = len(recipe.datasets[0].load().split("test"))
    return table_differences(readme_table(README.read_text(encoding="utf-8")), demo_table(rows), n_test,
                             len(recipe.seeds))


def write_readme_table(table: str) -> bool:
    """Replace README's demo table; True when it changed."""
    text = README.read_text(encoding="utf-8")
    readme_table(text)
    updated = TABLE_BLOCK.sub(lambda m: m.group(1) + table + m.group(3), text)
    if updated != text:
        README.write_text(updated, encoding="utf-8")
    return updated != text


def write_figure(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from adaptkit.plots import accuracy_vs_shots

    figure = accuracy_vs_shots(rows)
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(FIGURE, dpi=110, metadata={"Software": None})


def run_notebook(path: Path = NOTEBOOK, timeout: int = 900):
    """Execute a notebook in a scratch folder with a scratch cache; return it with outputs whose
    scratch paths are replaced by ``<scratch>``. Raises when a cell fails or prints a warning."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    with _scratch_cache() as scratch:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(scratch)}}).execute()
        roots = sorted({str(scratch), os.path.realpath(scratch), tempfile.gettempdir()}, key=len, reverse=True)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        for output in cell.outputs:
            if output.get("output_type") == "stream":
                text = output["text"]
                for root in roots:
                    text = text.replace(root, "<scratch>")
                output["text"] = text
                if output.get("name") == "stderr" or any(w in text for w in NOTEBOOK_OUTPUT_FORBIDDEN):
                    raise RuntimeError(f"{path.name}: cell {cell.execution_count} wrote {text.strip()[:300]!r}")
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare README's demo table with a fresh run")
    parser.add_argument("--skip-notebook", action="store_true", help="leave the notebook as it is")
    parser.add_argument("--skip-screenshots", action="store_true", help="leave the page and report screenshots")
    args = parser.parse_args(argv)
    _need_clone()
    kept = Path(tempfile.mkdtemp(prefix="adaptkit-docs-report-")) / "report.html"
    rows = demo_rows(progress=sys.stderr.isatty(), keep_report=kept)
    table = demo_table(rows)
    if args.check:
        problems = demo_differences(rows)
        if problems:
            print("README's demo table differs from a fresh run by more than CPU kernels explain:\n  "
                  + "\n  ".join(problems) + f"\n--- fresh\n{table}")
            return 1
        print("README's demo table matches a fresh run (within what CPU kernels can flip)")
        return 0
    print("README demo table", "updated" if write_readme_table(table) else "unchanged")
    write_figure(rows)
    print(f"wrote {FIGURE.relative_to(REPOSITORY)}")
    if not args.skip_screenshots:
        take_screenshots(kept)
        print(f"wrote {PAGE_SCREENSHOT.relative_to(REPOSITORY)} and {REPORT_SCREENSHOT.relative_to(REPOSITORY)}")
    if not args.skip_notebook:
        import nbformat

        nbformat.write(run_notebook(), NOTEBOOK)
        print(f"executed {NOTEBOOK.relative_to(REPOSITORY)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
