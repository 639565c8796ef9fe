"""test_rpc's session-timeout scenario, run in a process of its own:
``python -m tests.devices.session_timeout TRACKER KEY LIBRARY`` prints one JSON line.

When the server ends a session, it writes "session has expired" into the client's socket while
the session's process may still be answering. TVM's C++ RPC client sometimes ends the whole
process on that race (status 255, no signal, no Python trace; about 1 run in 4-10 under load).
In a child, that ends the child, not the pytest worker with every test scheduled after it.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from hydra import compose, initialize_config_module

from dlas.config import register_schemas, validate
from dlas.devices import Device, DeviceError, Program, create_device

SHORT_TIMEOUT_S = 2


def rpc_device(tracker: str, key: str, timeout_s: float) -> Device:
    register_schemas()
    overrides = ["device=rpc", f"device.tracker={tracker}", f"device.key={key}"]
    with initialize_config_module("dlas.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"device.timeout_s={timeout_s}"])
    device = create_device(validate(cfg).device)
    device.check_available()
    return device


def main(tracker: str, key: str, library: str) -> dict:
    program = Program(library=library, description=library)
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype("float32")
    outcome: dict = {"error": None}
    start = time.monotonic()
    try:
        with rpc_device(tracker, key, SHORT_TIMEOUT_S).load(program) as runner:
            while time.monotonic() - start < 60:  # bounded even if the timeout were ignored
                runner.time(x, warmup=0, repeat=500)
    except DeviceError as exc:
        outcome["error"] = str(exc)
    outcome["elapsed_s"] = time.monotonic() - start
    # The server ended the session itself, so it is still there for the next one.
    with rpc_device(tracker, key, 60).load(program) as runner:
        outcome["next_session_shape"] = list(runner.run(x).shape)
    return outcome


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
