"""A TVM RPC tracker and servers on this machine: to try ``device=rpc`` without a board, and for
the tests and benchmarks. Subprocesses, each stopped with its whole process group.

    python -m dlas.devices.loopback --key local
    python -m dlas.run device=rpc device.tracker=127.0.0.1:PORT device.key=local
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from dlas.devices.remote import Endpoint

# Starting one costs an `import tvm` (5-10 s; several times that on two busy cores).
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@dataclass
class Proc:
    popen: subprocess.Popen
    log: Path
    port: int
    ready: Callable[[], bool]
    what: str

    def signal(self, sig: int) -> None:
        """Signal the whole process group: the RPC server forks one child per session."""
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)  # a stopped group only dies once continued
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def wait_ready(self) -> None:
        end = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < end:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.what} exited: {self.log.read_text()[-2000:]}")
            if self.ready():
                return
            time.sleep(0.2)
        tail = self.log.read_text()[-2000:]
        raise TimeoutError(f"{self.what} not ready in {START_TIMEOUT_S:g} s: {tail}")


def _die_with_parent() -> None:
    # Linux: the kernel kills the process if its parent dies before the cleanup has run.
    import ctypes

    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start(
    stack: ExitStack,
    args: list[str],
    log: Path,
    port: int,
    ready: Callable[[], bool],
    what: str,
    env: dict[str, str] | None = None,
) -> Proc:
    """Start ``python -m ARGS`` now (without waiting for it), stopped when ``stack`` closes."""
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    proc = Proc(popen, log, port, ready, what)
    stack.callback(proc.stop)
    return proc


def start_tracker(stack: ExitStack, logs: Path) -> Proc:
    port = free_port()
    args = ["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--port-end", str(port + 1)]
    log = logs / f"tracker-{port}.log"
    return start(stack, args, log, port, lambda: accepts(port), "RPC tracker")


def start_server(
    stack: ExitStack,
    logs: Path,
    key: str,
    tracker_port: int | None = None,
    env: dict[str, str] | None = None,
) -> Proc:
    """An RPC server, registered under ``key`` at the tracker if one is given. ``key=""``
    starts it without ``--key``, as on a board (it then accepts only the empty key)."""
    port = free_port()
    args = ["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--port-end", str(port + 1)] + (["--key", key] if key else [])
    ready: Callable[[], bool] = lambda: accepts(port)  # noqa: E731
    if tracker_port is not None:
        args += ["--tracker", f"127.0.0.1:{tracker_port}"]
        endpoint = Endpoint(key=key, tracker_host="127.0.0.1", tracker_port=tracker_port)

        def ready() -> bool:  # this server registered (another one under the key is not)
            if not accepts(tracker_port):
                return False
            servers = endpoint.tracker_summary().get("server_info", [])
            return any(
                s.get("key") == f"server:{key}" and list(s.get("addr") or [])[1:] == [port]
                for s in servers
            )

    log = logs / f"server-{key or 'nokey'}-{port}.log"
    # Session work folders (uploaded libraries) go under logs: a killed server leaves its own.
    env = {"TMPDIR": str(logs), **(env or {})}
    return start(stack, args, log, port, ready, f"RPC server {key!r}", env)


@contextmanager
def tracker_with_server(
    logs: Path, key: str, env: dict[str, str] | None = None
) -> Iterator[tuple[Proc, Proc]]:
    """A tracker and one server registered under ``key``, both ready."""
    with ExitStack() as stack:
        tracker = start_tracker(stack, logs)
        server = start_server(stack, logs, key, tracker.port, env)
        tracker.wait_ready()
        server.wait_ready()
        yield tracker, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--key", default="local", help="key the server registers under")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="dlas-loopback-"))
    with tracker_with_server(logs, args.key) as (tracker, _):
        print(f"device=rpc device.tracker=127.0.0.1:{tracker.port} device.key={args.key}")
        print(f"(logs in {logs}; Ctrl-C stops both)", flush=True)
        with suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
