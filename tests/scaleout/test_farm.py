"""A farm of boards behind one RPC tracker key (loopback servers), and a plain keyless server."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from dlas.config import validate
from dlas.devices import create_device
from dlas.devices import loopback as lb

pytestmark = pytest.mark.rpc

POOL_KEY = "dlas-pool"


@pytest.mark.scaleout
def test_two_servers_under_one_key_serve_two_concurrent_sessions(compose_cfg, tmp_path):
    with ExitStack() as stack:
        tracker = lb.start_tracker(stack, tmp_path)
        servers = [lb.start_server(stack, tmp_path, POOL_KEY, tracker.port) for _ in range(2)]
        for proc in (tracker, *servers):
            proc.wait_ready()
        typed = validate(
            compose_cfg(
                "device=rpc",
                f"device.tracker=127.0.0.1:{tracker.port}",
                f"device.key={POOL_KEY}",
                "device.timeout_s=60",
            )
        )
        device = create_device(typed.device)
        assert device.rpc_workers() == 2  # MetaSchedule measures on both boards at once
        one = device.endpoint.open()
        # With one board the tracker would queue this request until the first session ends
        # (and TVM's client would wait forever): it is served at once, by the other board.
        two = device.endpoint.open()
        assert one.get_function("runtime.NumThreads")() >= 1
        assert two.get_function("runtime.NumThreads")() >= 1
        served = [s.log.read_text().count("connected from") for s in servers]
        assert served == [1, 1], served
        del one, two


def test_keyless_server_works_with_the_default_key(compose_cfg, tmp_path):
    with ExitStack() as stack:
        server = lb.start_server(stack, tmp_path, "")
        server.wait_ready()
        typed = validate(
            compose_cfg("device=rpc", "device.host=127.0.0.1", f"device.port={server.port}")
        )
        assert typed.device.key == "rpc"  # the tracker's default, which such a server refuses
        device = create_device(typed.device)
        device.check_available()  # asks the board for its facts through a session
        assert device.facts and device.facts["device_exists"]
