"""``mlflow models serve`` for a logged model, as a context manager (tests, benchmarks).

The server runs in its own process group on a loopback port and is ended as a whole (uvicorn
starts a worker process under the CLI process) when the block exits.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_cli() -> list[str]:
    # The CLI next to this interpreter (a venv's bin), else `python -m mlflow`.
    cli = Path(sys.executable).with_name("mlflow")
    return [str(cli)] if cli.exists() else [sys.executable, "-m", "mlflow"]


@contextmanager
def serve(
    model_uri: str,
    env: dict[str, str] | None = None,
    workers: int = 1,
    startup_timeout_s: float = 180.0,
    log_path: Path | None = None,
) -> Iterator[str]:
    """Serve ``model_uri`` with ``mlflow models serve --env-manager local``; yields the base
    URL once ``/ping`` answers, and ends the server's process group afterwards."""
    port = free_port()
    cmd = [
        *_mlflow_cli(),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        str(workers),
    ]
    env = dict(os.environ if env is None else env)
    # MLflow execs `uvicorn` by name: the one of this interpreter's environment.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_ping(url, proc, startup_timeout_s, log_path)
        yield url
    finally:
        _stop(proc)
        if log_path:
            log.close()


def _wait_for_ping(url: str, proc: subprocess.Popen, timeout_s: float, log: Path | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            raise RuntimeError(f"mlflow models serve exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow models serve did not answer {url}/ping in {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL if it has not ended 10 s later."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def invoke(url: str, batch: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
    """POST a batch to ``/invocations`` (MLflow's ``{"inputs": ...}`` tensor format)."""
    body: dict[str, Any] = {"inputs": batch.tolist()}
    if params:
        body["params"] = params
    req = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return np.asarray(json.loads(resp.read())["predictions"], dtype=np.float32)
