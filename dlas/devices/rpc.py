"""A remote board reached through TVM RPC: code cross-compiled here, uploaded, run and timed there.

The library is linked on this host for the board's triple (``device.cross_compiler``), sent
over RPC (``session.upload`` / ``session.load_module``) and run with
``relax.VirtualMachine(lib, remote_dev)``; timing uses the VM's ``time_evaluator`` on the board
and accuracy runs the test samples through the same session, so both are the board's own.
"""

from __future__ import annotations

import functools
import math
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dlas.config.schema import DeviceConfig
from dlas.devices import cross
from dlas.devices.base import Device, DeviceError, DeviceUnavailableError, Program, Runner
from dlas.devices.local_cpu import TVMRunner
from dlas.devices.registry import DEVICES
from dlas.devices.remote import Endpoint, deadline, direct_session

# Target attributes that may be "auto", and the fact read from the board that fills each
# (num-cores: the threads its TVM runtime runs with, e.g. the big cores of a big.LITTLE CPU).
AUTO_FACTS = {"mcpu": "cpu", "mtriple": "triple", "num-cores": "threads", "arch": "arch"}
# TVM's thread-pool affinity mode for "the big cores" (big.LITTLE boards such as the HiKey).
_BIG_CORES = 1


def read_facts(session: Any, device_kind: str) -> dict[str, Any]:
    """What the board says about itself. The LLVM queries exist only where the board's TVM
    includes LLVM (pip wheels do; a runtime-only build does not)."""
    facts: dict[str, Any] = {}
    for name, func in (
        ("cpu", "target.llvm_get_system_cpu"),
        ("triple", "target.llvm_get_system_triple"),
        ("threads", "runtime.NumThreads"),
    ):
        try:
            f = session.get_function(func)
            if f is not None:
                facts[name] = f()
        except (RuntimeError, AttributeError):
            pass
    dev = session.device(device_kind, 0)
    facts["device_exists"] = bool(dev.exist)
    if device_kind == "cuda" and facts["device_exists"]:
        facts["arch"] = "sm_" + str(dev.compute_version).replace(".", "")
    return facts


@DEVICES.register("rpc")
class RPCDevice(Device):
    one_program_at_a_time = True

    def __init__(self, cfg: DeviceConfig) -> None:
        super().__init__(cfg)
        self.endpoint = Endpoint.from_config(cfg)
        self.facts: dict[str, Any] | None = None

    # --- target ---------------------------------------------------------------------------
    @property
    def device_kind(self) -> str:
        """Which device on the board runs the kernels: ``cpu`` for an llvm target, else the
        target kind (cuda, opencl, vulkan, ...), as ``session.device`` names them."""
        kind = str(self.cfg.target.get("kind", "llvm"))
        return "cpu" if kind in ("llvm", "c") else kind

    def _autos(self) -> list[str]:
        return [
            f"{field}.{k}"
            for field, d in (
                ("target", self.cfg.target),
                ("host_target", self.cfg.host_target or {}),
            )
            for k, v in d.items()
            if v == "auto"
        ]

    def _resolve(self, spec: dict[str, Any] | None, field: str) -> dict[str, Any] | None:
        if spec is None:
            return None
        resolved = dict(spec)
        for k, v in spec.items():
            if v != "auto":
                continue
            fact = (self.facts or {}).get(AUTO_FACTS.get(k, ""))
            if fact is None:
                raise DeviceUnavailableError(
                    f"device.{field}.{k}=auto is read from the board, which did not say "
                    f"({self.endpoint.describe()}); name it, e.g. device.{field}.{k}=..."
                )
            resolved[k] = int(fact) if isinstance(fact, int) else str(fact)
        return resolved

    @property
    def target(self) -> Any:
        import tvm

        return tvm.target.Target(
            self._resolve(self.cfg.target, "target"),
            host=self._resolve(self.cfg.host_target, "host_target"),
        )

    def describe(self) -> dict[str, str]:
        tags = {
            "device.reach": self.endpoint.describe(),
            "device.cross_compiler": self.cfg.cross_compiler or "host",
        }
        for name in ("cpu", "triple", "threads", "arch"):
            if self.facts and name in self.facts:
                tags[f"device.remote_{name}"] = str(self.facts[name])
        return tags

    # --- reachability ---------------------------------------------------------------------
    def check_available(self) -> None:
        if self.cfg.measure:
            self.endpoint.probe()
            self.facts = self._ask_board()
            if not self.facts["device_exists"]:
                raise DeviceUnavailableError(
                    f"{self.endpoint.describe()}: the server has no {self.device_kind} device "
                    f"(is its TVM runtime built with {self.device_kind}?)"
                )
        elif autos := self._autos():
            # measure=false promises not to contact the board, so nothing can be read from it.
            raise DeviceUnavailableError(
                f"device.{', device.'.join(autos)}=auto would be read from the board, which "
                "device.measure=false never contacts; name them"
            )
        reason = cross.missing_compiler_reason(self.target, self.cfg.cross_compiler)
        if reason:
            raise DeviceUnavailableError(reason)

    def _ask_board(self) -> dict[str, Any]:
        try:
            with (
                deadline(self.endpoint.client_deadline_s, f"asking {self.endpoint.describe()}"),
                self.endpoint.session() as session,
            ):
                return read_facts(session, self.device_kind)
        except (TimeoutError, OSError, RuntimeError) as exc:
            if isinstance(exc, DeviceUnavailableError):
                raise
            raise DeviceUnavailableError(
                f"{self.endpoint.describe()}: the server did not answer a query ({exc}); "
                f"{self.endpoint.how_to_serve()}"
            ) from exc

    # --- programs -------------------------------------------------------------------------
    def export_library(self, executable: Any, path: str | Path) -> None:
        cross.export_library(executable, path, self.cfg.cross_compiler)

    def load_library(self, path: str | Path) -> Program:
        # Built for the board's triple: it may not even load here, and needs not.
        return Program(library=str(path), description=f"cached {path}")

    @contextmanager
    def load(self, program: Program) -> Iterator[Runner]:
        if not program.is_tvm:
            raise DeviceUnavailableError(
                f"device={self.cfg.name} runs TVM libraries only; {program.description!r} is "
                "a Python callable that runs in this process"
            )
        what = (
            f"the session on {self.endpoint.describe()} (device.timeout_s={self.cfg.timeout_s:g})"
        )
        with tempfile.TemporaryDirectory(prefix="dlas-rpc-") as tmp:
            library = program.library
            if library is None:
                library = str(Path(tmp) / "model.so")
                self.export_library(program.executable, library)
            started = time.monotonic()
            try:
                with (
                    deadline(self.endpoint.client_deadline_s, what),
                    self.endpoint.session() as session,
                ):
                    session.upload(library, "model.so")
                    lib = session.load_module("model.so")
                    if self.cfg.num_threads and self.device_kind == "cpu":
                        session.get_function("runtime.config_threadpool")(
                            _BIG_CORES, self.cfg.num_threads
                        )
                    runner = TVMRunner(lib, session.device(self.device_kind, 0))
                    yield runner
                    # The session ends when nothing refers to it any more; one left open would
                    # keep the (one client at a time) server busy. Not on failure: freeing
                    # remote objects waits on the board, so session() first cuts it off.
                    runner.close()
                    del lib
            # UnicodeDecodeError: TVM's server writes "session has expired" into the socket
            # while the session's process may still be answering, and the client can read the
            # two interleaved as an error message that is not UTF-8 (1 of 3 loopback runs).
            except (TimeoutError, OSError, RuntimeError, UnicodeDecodeError) as exc:
                if isinstance(exc, DeviceUnavailableError | DeviceError):
                    raise
                problem = str(exc)  # the deadline's own message already says what timed out
                if not problem.startswith(what):
                    problem = f"{what} failed: {type(exc).__name__}: {problem}"
                if time.monotonic() - started >= self.cfg.timeout_s:
                    problem += " (the server ends a session after device.timeout_s)"
                raise DeviceError(problem) from exc

    # --- tuning ---------------------------------------------------------------------------
    def metaschedule_runner(
        self, evaluator_config: Any = None, session_timeout_s: float | None = None
    ) -> Any:
        """MetaSchedule's RPCRunner measuring candidates on the board (through the tracker, or
        straight to the server when device.host is set). One candidate's session may last
        ``session_timeout_s`` (default: device.timeout_s)."""
        from tvm.s_tir import meta_schedule as ms

        timeout = int(math.ceil(session_timeout_s or self.cfg.timeout_s))
        ep = self.endpoint
        workers = self.rpc_workers()
        if ep.via_tracker:
            config = ms.runner.RPCConfig(
                tracker_host=ep.tracker_host,
                tracker_port=ep.tracker_port,
                tracker_key=ep.key,
                session_timeout_sec=timeout,
            )
            return ms.runner.RPCRunner(config, evaluator_config, max_workers=workers)
        # RPCConfig insists on tracker fields; the session function below ignores them.
        config = ms.runner.RPCConfig(
            tracker_host=ep.host,
            tracker_port=ep.port,
            tracker_key=ep.key or "-",
            session_timeout_sec=timeout,
        )
        return ms.runner.RPCRunner(
            config,
            evaluator_config,
            max_workers=workers,
            f_create_session=functools.partial(direct_session, ep.host, ep.port, ep.key, timeout),
        )

    def rpc_workers(self) -> int:
        """Candidates measured at once: device.rpc_workers, else one per server the tracker
        has under the key (the pool of boards), else 1 (a server reached directly)."""
        if self.cfg.rpc_workers:
            return int(self.cfg.rpc_workers)
        if not self.endpoint.via_tracker:
            return 1
        try:
            servers = self.endpoint.tracker_summary().get("server_info", [])
        except DeviceUnavailableError:
            return 1
        return max(1, sum(1 for s in servers if s.get("key") == f"server:{self.endpoint.key}"))

    def metaschedule_builder(self) -> Any:
        """A LocalBuilder that links candidates with the cross compiler (MetaSchedule's default
        ships object files for the board to link, which needs a compiler there)."""
        if not self.cfg.cross_compiler:
            return None
        from tvm.s_tir import meta_schedule as ms

        return ms.builder.LocalBuilder(
            f_export=functools.partial(cross.metaschedule_export, self.cfg.cross_compiler)
        )
