"""Loopback TVM RPC for the session: a tracker with servers under several keys, and one server
reached directly. All start at once (each costs an `import tvm`) and are killed at the end."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from dlas.devices import loopback as lb

KEY = "dlas-loopback"
# Servers that a test may kill or stop: each test that does so has its own.
VICTIM_KEYS = ("dlas-killed", "dlas-hung")
DIRECT_KEY = "dlas-direct"


@dataclass
class Loopback:
    tracker_port: int
    key: str
    direct: lb.Proc
    victims: dict[str, lb.Proc]
    logs: Path

    @property
    def tracker(self) -> str:
        return f"127.0.0.1:{self.tracker_port}"


@pytest.fixture(scope="session")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loopback]:
    logs = tmp_path_factory.mktemp("rpc-logs")
    with ExitStack() as stack:
        tracker = lb.start_tracker(stack, logs)
        servers = {
            key: lb.start_server(stack, logs, key, tracker.port) for key in (KEY, *VICTIM_KEYS)
        }
        direct = lb.start_server(stack, logs, DIRECT_KEY)
        for proc in (tracker, *servers.values(), direct):
            proc.wait_ready()
        yield Loopback(tracker.port, KEY, direct, {k: servers[k] for k in VICTIM_KEYS}, logs)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session's pipeline runs: the tiny model is trained once."""
    return tmp_path_factory.mktemp("cache")
