"""The MLflow UI opens a dlas experiment on its runs table: checked in a real headless Chromium
against a real ``mlflow server`` (slow: the server takes tens of seconds to start)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from dlas.experiment_view import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, runs_view_url
from dlas.serving.server import _stop, free_port


def test_dlas_experiments_carry_the_machine_learning_kind(logged_run):
    client = MlflowClient(logged_run.uri)
    exp = client.get_experiment(client.get_run(logged_run.run_id).info.experiment_id)
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _page_text(url: str, profile: Path) -> str:
    dom = subprocess.run(
        [
            _chromium(), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=15000",
            "--dump-dom", url,
        ],
        capture_output=True, text=True, timeout=180, check=True,
    ).stdout  # fmt: skip
    dom = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


@pytest.mark.slow
@pytest.mark.skipif(
    _chromium() is None, reason="needs Chromium (make browser: apt-get install chromium)"
)
def test_the_ui_opens_the_runs_table_in_a_real_browser(logged_run, tmp_path):
    db = logged_run.uri
    port = free_port()
    cli = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(cli), "server", "--backend-store-uri", db, "-h", "127.0.0.1", "-p", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        exp_id = MlflowClient(db).get_run(logged_run.run_id).info.experiment_id
        text = _page_text(runs_view_url(base, exp_id), tmp_path / "profile")
    finally:
        _stop(proc)
    # The runs table with this run in it, not the GenAI overview (Traces / token usage).
    assert "Runs" in text and "tiny_cnn-dense-direct-untuned-local_cpu" in text, text[:2000]
    assert "Detect Issues" not in text and "No data available" not in text
