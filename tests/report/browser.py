"""A real headless Chromium (Debian's ``chromium``; ``make browser`` installs it) that opens a
page with the network blocked and returns the DOM after scripts ran."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str:
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "no Chromium to render the report in: install it with `make browser` "
        "(apt-get install -y chromium; needs root and apt)"
    )


def dump_dom(page: Path, timeout: float = 90) -> str:
    """The page's DOM after load, with every network request refused (offline check)."""
    with tempfile.TemporaryDirectory(prefix="dlas-chromium-") as profile:
        proc = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--host-resolver-rules=MAP * ~NOTFOUND",  # a CDN would be unreachable
                f"--user-data-dir={profile}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    assert proc.returncode == 0 and "<html" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout
