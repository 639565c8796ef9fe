"""Which CPU features a compression option needs on the run's target (read from the config)."""

from __future__ import annotations

from typing import Any


def config_target(cfg: Any) -> Any:
    """The TVM target ``cfg.device`` compiles for, or None when it is not a CPU (llvm) one."""
    import tvm

    from dlas.devices.local_cpu import resolve_target_dict

    target = dict(cfg.device.target or {})
    if cfg.device.kind == "local":
        target = resolve_target_dict(target, cfg.device.num_threads)
    if target.get("kind") != "llvm":
        return None
    return tvm.target.Target(target)


def missing_cpu_features(compression: Any, cfg: Any) -> str | None:
    """Why ``compression`` cannot run on the configured CPU (None when it can)."""
    needed = getattr(compression, "required_cpu_features", {})
    if not needed:
        return None
    from dlas.algorithms import intrinsics

    target = config_target(cfg)
    if target is None:
        return (
            f"compression={cfg.compression.name} runs on CPU (llvm) targets only; "
            f"device={cfg.device.name} is not one"
        )
    missing = [
        f"{name} ({what})"
        for name, what in needed.items()
        if not intrinsics.has_feature(name, target)
    ]
    if not missing:
        return None
    return (
        f"compression={cfg.compression.name} needs the CPU feature {', '.join(missing)}, which "
        f"device={cfg.device.name} (mcpu={target.mcpu or 'generic'}) lacks: use compression=fp16 "
        "or int8, or a device whose CPU has it"
    )
