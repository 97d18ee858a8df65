"""The HTML report and the live status page render in headless Chromium without console errors and show
the drifted feature first; screenshots are saved under test-artifacts/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    MODEL_VIEW,
    DaemonProcess,
    Setup,
    _clean_env,
    both_stages_done,
    produce_simulated,
    wait_for_log,
    wait_until,
)

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("CI"):
            pytest.fail("CI must install the Debian packages chromium and chromium-driver")
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1600"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


@pytest.fixture
def drifted(kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path) -> Iterator[tuple[Setup, Path,
                                                                                             DaemonProcess]]:
    """A daemon with a reference, after a 2-sigma shift of `age`; left running for the status page."""
    setup = Setup(unique, kafka_bootstrap, redis_url, tmp_path)
    setup.create_topics()
    config = setup.write_config(MODEL_VIEW)
    env = _clean_env()

    def cli(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "monitor", *args, "--config", str(config)], check=True,
                              capture_output=True, text=True, env=env).stdout

    cli("simulate", "--model", "churn", "--events", "30000", "--seed", "3", "--out", str(tmp_path / "t.parquet"))
    cli("reference", "build", "--model", "churn", "--input", str(tmp_path / "t.parquet"))
    produce_simulated(setup, 8_000, seed=4, incidents=["shift:feature=age,start=3000,size=2.0"])
    d = DaemonProcess(config, tmp_path / "daemon.log").start()
    wait_for_log(d, "partitions.assigned", 60)
    wait_until(lambda: both_stages_done(setup), 90, "both stages to reach the end")
    yield setup, config, d
    d.kill()


def _console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _shot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def test_report_renders_with_the_drifted_feature_first(browser: Any, drifted: Any) -> None:
    setup, config, _daemon = drifted
    out = setup.tmp / "report.html"
    subprocess.run([sys.executable, "-m", "monitor", "report", "--config", str(config), "--model", "churn",
                    "--out", str(out)], check=True, capture_output=True, env=_clean_env())
    text = out.read_text()
    assert "http://" not in text and "https://" not in text and "<script src" not in text  # self-contained
    browser.get(out.as_uri())
    from selenium.webdriver.common.by import By

    first = browser.find_elements(By.CSS_SELECTOR, ".feature")[0].get_attribute("data-feature")
    ranking = browser.find_elements(By.CSS_SELECTOR, "#ranking tr td:first-child")[0].text
    assert first == ranking == "age"
    assert browser.find_elements(By.CSS_SELECTOR, "#f-age svg rect"), "the distribution chart is drawn"
    assert _console_errors(browser) == []
    assert _shot(browser, "report.png").stat().st_size > 10_000
    if os.environ.get("MM_UPDATE_DOCS_SCREENSHOTS"):
        shutil.copy(ARTIFACTS / "report.png", Path(__file__).resolve().parent.parent / "docs" / "report.png")


def test_status_page_renders_with_the_drifted_feature_first(browser: Any, drifted: Any) -> None:
    setup, _config, _daemon = drifted
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{setup.http_port}/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#features tr.feature")
    assert rows and rows[0].get_attribute("data-feature") == "age"
    assert "ALERT" in rows[0].text
    assert _console_errors(browser) == []
    assert _shot(browser, "status.png").stat().st_size > 10_000
    if os.environ.get("MM_UPDATE_DOCS_SCREENSHOTS"):
        shutil.copy(ARTIFACTS / "status.png", Path(__file__).resolve().parent.parent / "docs" / "status.png")
