"""In a real browser (headless Chromium from the system packages, driven by Selenium): the page at
/ classifies an uploaded JPEG into five bars, and a compare folder's report.html shows its
figures, both without console errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adaptkit.protocol import compare
from adaptkit.recipes import load_recipe
from adaptkit.serve import ServeConfig, create_app, load_predictor
from helpers import ServerThread, save_digits_adapter, write_jpegs

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("chromedriver") is None or shutil.which("chromium") is None,
                                 reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1200,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_page_classifies_an_uploaded_jpeg_into_five_bars(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    model, sha256 = load_predictor(save_digits_adapter(tmp_path / "gda.safetensors"), device="cpu")
    image = write_jpegs(tmp_path / "imgs", n_classes=1, per_class=1, size=(64, 64))[0]
    with ServerThread(create_app(model, ServeConfig(), adapter_sha256=sha256)) as server:
        browser.get(server.url + "/")
        WebDriverWait(browser, 20).until(expected_conditions.text_to_be_present_in_element((By.ID, "card"), "gda"))
        browser.find_element(By.ID, "files").send_keys(image)
        WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".result .bar")) == 5)
        labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".result .bar .label")]
        assert len(labels) == 5 and set(labels) <= set(model.classnames)
        widths = [e.value_of_css_property("width") for e in browser.find_elements(By.CSS_SELECTOR, ".result .fill")]
        assert all(w.endswith("px") for w in widths)
        assert console_errors(browser) == []


def test_the_demo_recipes_report_shows_its_figures_without_console_errors(browser, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By

    monkeypatch.setenv("ADAPTKIT_CACHE", str(tmp_path / "cache"))
    compare(load_recipe(Path(__file__).parent.parent / "recipes" / "demo.toml"), output=str(tmp_path / "out"),
            progress=False)
    browser.get((tmp_path / "out" / "report.html").as_uri())
    figures = browser.find_elements(By.CSS_SELECTOR, ".figure svg")
    assert figures and all(f.size["width"] > 200 and f.size["height"] > 100 for f in figures)
    assert len(browser.find_elements(By.TAG_NAME, "table")) >= 3
    assert console_errors(browser) == []
