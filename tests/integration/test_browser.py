"""The MLflow UI in a real browser (Playwright driving Debian's ``chromium``; no browser is downloaded): from the
registered model version to the training stage that produced it, from the stage to the negatives and datasets it
read, and on to the run that built the negatives, checking the names and digests a person sees.

``CDCO_UPDATE_SCREENSHOTS=1`` writes the pages' screenshots to docs/images/ (the user guide's pictures); otherwise
they go to the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = ["orchestration.task_runner=thread"]


@pytest.fixture(scope="module")
def ui(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A smoke pipeline run in a fresh store, and an MLflow server on it: {"url", "result", "shots"}."""
    from tests.integration.conftest import free_port

    home = tmp_path_factory.mktemp("browser-home")
    store = f"sqlite:///{home / 'mlflow.db'}"
    before = {k: os.environ.get(k) for k in ("CDCO_HOME", "MLFLOW_TRACKING_URI")}
    os.environ.update(CDCO_HOME=str(home), MLFLOW_TRACKING_URI=store)
    try:
        from cdco_core.profile import load_profile
        from flows.full_pipeline import run_pipeline

        result = run_pipeline(load_profile("smoke", OVERRIDES), "smoke", OVERRIDES)
    finally:
        for k, v in before.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    port = free_port()
    log = open(home / "mlflow-server.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", store, "--no-serve-artifacts", "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_health(url, server, home / "mlflow-server.log")
        shots = ROOT / "docs" / "images" if os.environ.get("CDCO_UPDATE_SCREENSHOTS") == "1" else home / "shots"
        shots.mkdir(parents=True, exist_ok=True)
        yield {"url": url, "result": result, "shots": shots}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def _wait_health(url: str, server: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds  # a hang guard, not a speed target
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"MLflow server did not answer within {seconds:.0f} s; see {log}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: run scripts/system-deps.sh as root (apt-get install chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True)
        yield b
        b.close()


def _tidy(page: Any) -> None:
    """The model-training view of the UI (not GenAI), without the assistant panel: what the screenshots show."""
    toggle = page.get_by_text("Model training", exact=True)
    if toggle.count():
        toggle.first.click()
    close = page.locator("button[aria-label='Close']")
    if close.count():
        close.first.click()
    page.wait_for_timeout(500)


def test_from_model_version_to_stage_to_negatives(ui, browser) -> None:
    from tasks.lineage import short

    result = ui["result"]
    reg = result["registered"]
    steps = result["steps"]
    stage = "train[cdco/seed0/3-consolidate]"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(90_000)  # the UI's first load on a busy 2-core machine

    # the registered version: its alias, its weights digest, and the run it came from
    page.goto(f"{ui['url']}/#/models/{reg['name']}/versions/{reg['version']}")
    page.get_by_text("Source Run").first.wait_for()
    _tidy(page)
    body = page.inner_text("body")
    assert "latest_run" in body and reg["weights_sha256"] in body
    page.screenshot(path=str(ui["shots"] / "mlflow-model-version.png"))
    page.get_by_role("link", name=stage).first.click()

    # the stage run: its inputs with their digests and producing runs, in the description and the datasets
    page.get_by_text("Show more").first.wait_for()
    page.get_by_text("Show more").first.click()
    assert page.get_by_role("heading", name=stage).count() or stage in page.inner_text("body")
    text = page.inner_text("body")
    neg = steps["negatives[seed0]"]["digest"]
    assert "negatives" in text and short(neg) in text and "build_negative_index" in text
    assert short(steps["train[cdco/seed0/2-poincare]"]["digest"]) in text  # the previous stage
    page.screenshot(path=str(ui["shots"] / "mlflow-stage-run.png"))
    page.get_by_text("rotten_tomatoes/train (", exact=False).first.click()  # the Datasets box opens the list
    page.get_by_text(f"negatives[seed0] ({neg[:36]})").first.wait_for()
    drawer = page.inner_text("body")
    assert "rotten_tomatoes/validation (" in drawer and "imdb/train (" in drawer
    page.screenshot(path=str(ui["shots"] / "mlflow-stage-datasets.png"))
    page.keyboard.press("Escape")

    # on to the run that built the negatives (description links open in a new tab: follow the address)
    href = page.get_by_role("link", name="build_negative_index").first.get_attribute("href")
    page.goto(f"{ui['url']}/{href.lstrip('/')}")
    page.get_by_text("Show more").first.wait_for()
    page.get_by_text("Show more").first.click()
    text = page.inner_text("body")
    assert "build_negative_index" in text and short(steps["manifold[seed0]"]["digest"]) in text
    assert f"Output digest (as the steps that read it list it): {short(neg)}" in text  # the digest the stage listed
    assert "embed[imdb]" in text and "negatives.parquet" in text
    page.screenshot(path=str(ui["shots"] / "mlflow-negatives-run.png"))
    page.close()
