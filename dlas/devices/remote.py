"""Reaching a board through TVM RPC: a tracker that hands out servers by key, or one server.

Every wait here is bounded: probes use plain sockets with a timeout (TVM's own tracker client
retries a refused connection for 60 s, and a request for a key nobody serves waits forever),
and a session runs under a deadline that interrupts a board that stops answering.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from dlas.config.schema import DeviceConfig
from dlas.devices.base import DeviceUnavailableError

# A connect or a tracker query that takes longer than this means the endpoint is not there.
CONNECT_TIMEOUT_S = 10.0


@contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Raise TimeoutError in this thread if the block runs longer than ``seconds``.

    SIGALRM interrupts a blocked socket read inside TVM's RPC client (its socket loop checks
    for Python signals), so a board that hangs cannot hang the run. Signals only reach the main
    thread; elsewhere the RPC server's own session timeout is the bound."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(_signum: int, _frame: Any) -> None:
        raise TimeoutError(f"{what} did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay:  # someone else's alarm (e.g. pytest-timeout) was pending: re-arm it
            left = max(outer_delay - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


@dataclass(frozen=True)
class Endpoint:
    """Where the board's RPC server is: behind a tracker (tracker_host set) or at host:port."""

    key: str
    host: str | None = None
    port: int = 9090
    tracker_host: str | None = None
    tracker_port: int = 9190
    timeout_s: float = 600.0

    @classmethod
    def from_config(cls, cfg: DeviceConfig) -> Endpoint:
        if cfg.host:
            return cls(key=cfg.key or "", host=cfg.host, port=cfg.port, timeout_s=cfg.timeout_s)
        host, _, port = str(cfg.tracker).rpartition(":")
        return cls(
            key=cfg.key or "", tracker_host=host, tracker_port=int(port), timeout_s=cfg.timeout_s
        )

    @property
    def via_tracker(self) -> bool:
        return self.tracker_host is not None

    @property
    def session_timeout_s(self) -> int:
        return int(math.ceil(self.timeout_s))

    @property
    def client_deadline_s(self) -> float:
        """The client's own bound, a little after the server's: a server that ends a session
        itself reports the timeout and keeps serving, whereas a client that hangs up first
        makes TVM's server stop serving altogether."""
        return self.session_timeout_s + CONNECT_TIMEOUT_S

    def describe(self) -> str:
        if self.via_tracker:
            return f"RPC tracker {self.tracker_host}:{self.tracker_port} (key {self.key!r})"
        return f"RPC server {self.host}:{self.port} (key {self.key!r})"

    def how_to_serve(self) -> str:
        """The commands that would make this endpoint answer."""
        if self.via_tracker:
            local = self.tracker_host in ("127.0.0.1", "localhost", "::1")
            return (
                f"start the tracker with `python -m tvm.exec.rpc_tracker --host 0.0.0.0 "
                f"--port {self.tracker_port}` and, on the board, the server with `python -m "
                f"tvm.exec.rpc_server --tracker {self.tracker_host}:{self.tracker_port} "
                f"--key {self.key}`"
                + (" (a board names this machine's address, not the loopback one)" if local else "")
            )
        return (
            f"on the board, start the server with `python -m tvm.exec.rpc_server --host "
            f"0.0.0.0 --port {self.port} --key {self.key}` (or reach it through a tracker: "
            f"device.tracker=HOST:PORT device.key=KEY)"
        )

    def _unavailable(self, problem: str) -> DeviceUnavailableError:
        return DeviceUnavailableError(f"{self.describe()}: {problem}; {self.how_to_serve()}")

    # --- probes (bounded, no TVM client involved) ----------------------------------------
    def _socket(self, host: str, port: int, what: str) -> socket.socket:
        try:
            return socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise self._unavailable(
                f"cannot connect to the {what} at {host}:{port} ({exc.strerror or exc})"
            ) from None

    def tracker_summary(self) -> dict[str, Any]:
        from tvm.rpc import base

        assert self.tracker_host is not None
        sock = self._socket(self.tracker_host, self.tracker_port, "tracker")
        try:
            sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            (magic,) = struct.unpack("<i", base.recvall(sock, 4))
            if magic != base.RPC_TRACKER_MAGIC:
                raise self._unavailable("that address answers, but not as a TVM RPC tracker")
            base.sendjson(sock, [base.TrackerCode.SUMMARY])
            reply = base.recvjson(sock)
        except (OSError, ValueError, struct.error) as exc:
            raise self._unavailable(f"the tracker did not answer a summary query ({exc})") from None
        finally:
            sock.close()
        if not reply or reply[0] != base.TrackerCode.SUCCESS:
            raise self._unavailable(f"the tracker refused a summary query ({reply})")
        return reply[1]

    def probe(self) -> None:
        """Fail now, with what to do about it, if no server can be had at this endpoint."""
        if not self.via_tracker:
            # A bare connect only: a client that completes the RPC handshake and then hangs up
            # makes TVM's server stop serving (its session child exits with an error).
            assert self.host is not None
            self._socket(self.host, self.port, "RPC server").close()
            return
        summary = self.tracker_summary()
        keys = sorted(
            {str(s.get("key", "")).removeprefix("server:") for s in summary.get("server_info", [])}
        )
        if self.key not in keys:
            registered = ", ".join(keys) if keys else "none"
            raise self._unavailable(
                f"no RPC server is registered under key {self.key!r} (registered keys: "
                f"{registered})"
            )

    # --- sessions ------------------------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[Any]:
        """A session for the block. If the block fails (the board died or stopped answering),
        the session's sockets are shut down first: dropping its remote objects afterwards
        would otherwise wait forever on a board that no longer answers."""
        before = _socket_fds()
        try:
            yield self.open()
        except BaseException:
            _shut_down(_socket_fds() - before)
            raise

    def open(self) -> Any:
        """A new RPC session (tvm.rpc.RPCSession); the server ends it after timeout_s."""
        from tvm import rpc

        try:
            if self.via_tracker:
                tracker = rpc.connect_tracker(self.tracker_host, self.tracker_port)
                try:
                    return tracker.request(
                        self.key, session_timeout=self.session_timeout_s, max_retry=2
                    )
                finally:
                    tracker.close()
            assert self.host is not None
            return connect_direct(self.host, self.port, self.key, self.session_timeout_s)
        except (OSError, RuntimeError) as exc:
            problem = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            if "matches key" in problem or "mismatch" in problem.lower():
                problem = f"the server refused key {self.key!r} ({problem})"
            raise self._unavailable(f"could not open a session: {problem}") from exc


def connect_direct(host: str, port: int, key: str, timeout_s: int) -> Any:
    """A session with the RPC server at host:port. A server started without ``--key`` (the
    usual way on a board) accepts only an empty key, whereas ``device.key`` defaults to the
    tracker's ``rpc``: when the server refuses ``key``, the empty one is tried before giving
    up (a server with another key refuses both, and the error names ``key``)."""
    from tvm import rpc

    try:
        return rpc.connect(host, port, key=key, session_timeout=timeout_s)
    except (RuntimeError, OSError) as exc:
        message = str(exc).lower()
        if not key or ("matches key" not in message and "mismatch" not in message):
            raise
        try:
            return rpc.connect(host, port, key="", session_timeout=timeout_s)
        except (RuntimeError, OSError):
            raise exc from None


def direct_session(host: str, port: int, key: str, timeout_s: int, _rpc_config: Any) -> Any:
    """MetaSchedule's ``f_create_session`` for a server reached without a tracker (module level
    so that its worker processes can unpickle it)."""
    return connect_direct(host, port, key, timeout_s)


def _socket_fds() -> set[int]:
    """This process's open sockets (Linux; elsewhere none, and nothing is shut down)."""
    fds = set()
    with suppress(OSError):
        for entry in os.scandir("/proc/self/fd"):
            with suppress(OSError):
                if os.readlink(entry.path).startswith("socket:"):
                    fds.add(int(entry.name))
    return fds


def _shut_down(fds: set[int]) -> None:
    # TVM's client owns these descriptors: shut the connections down, leave closing to it.
    for fd in fds:
        with suppress(OSError):
            sock = socket.socket(fileno=fd)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.detach()
