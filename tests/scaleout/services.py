"""PostgreSQL and an MLflow tracking server on loopback, started exactly as
``docs/scale-out.md`` and ``docker-compose.yml`` start them, each stopped by its pid.

PostgreSQL comes from the Debian packages (``make postgres``); ``initdb`` refuses to run as
root, so as root it runs as the ``postgres`` user in a throw-away folder that user owns.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from dlas.devices.loopback import accepts, free_port

PG_BIN = Path("/usr/lib/postgresql")


def pg_bin() -> Path | None:
    """Debian's PostgreSQL binaries (the newest installed major), or None."""
    if PG_BIN.is_dir():
        for major in sorted(PG_BIN.iterdir(), key=lambda p: p.name, reverse=True):
            if (major / "bin" / "initdb").exists():
                return major / "bin"
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def missing_reason() -> str | None:
    """Why the services cannot start here, or None."""
    if pg_bin() is None:
        return "PostgreSQL is not installed (make postgres: apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[scaleout]')"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: initdb cannot run as the postgres user"
    return None


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@dataclass
class Postgres:
    port: int
    data: Path

    def url(self, database: str, driver: str = "") -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        subprocess.run(
            _as_postgres(
                [str(pg_bin() / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), name]
            ),
            check=True,
            capture_output=True,
        )
        return self.url(name)


@contextmanager
def postgres() -> Iterator[Postgres]:
    """A throw-away cluster on a free loopback port (trust auth: loopback only)."""
    bindir = pg_bin()
    assert bindir is not None
    data = Path(tempfile.mkdtemp(prefix="dlas-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres(
            [str(bindir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust"]
        ),
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -h 127.0.0.1 -k {data} -c max_connections=200 -c fsync=off"
    ctl = [str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log")]
    subprocess.run(_as_postgres([*ctl, "-o", opts, "-w", "start"]), check=True, capture_output=True)
    try:
        yield Postgres(port, data)
    finally:
        subprocess.run(_as_postgres([*ctl, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@dataclass
class TrackingServer:
    url: str
    artifacts: Path
    popen: subprocess.Popen


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log: Path) -> Iterator[TrackingServer]:
    """``mlflow server`` with served artifacts, in its own process group."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_uri,
        "--serve-artifacts", "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    out = log.open("w")
    popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 180
        while True:
            if popen.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log.read_text()[-3000:]}")
            if accepts(port):
                with suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            if time.monotonic() > end:
                raise TimeoutError(f"mlflow server not up: {log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield TrackingServer(url, artifacts, popen)
    finally:
        stop_group(popen)
        out.close()


def stop_group(popen: subprocess.Popen) -> None:
    with suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=20)
