"""Cross-compilation on the host: link a library for the device's triple, and check the result."""

from __future__ import annotations

import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

# ELF e_machine values (System V ABI) of the architectures the study's devices use.
ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv"}
# How LLVM triples spell those architectures, and the aliases that mean the same one.
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "i386": "x86", "i686": "x86"}


def triple_arch(triple: str) -> str:
    """``aarch64`` from ``aarch64-linux-gnu``; ``x86_64`` from ``x86_64-conda-linux-gnu``."""
    arch = triple.split("-", 1)[0].lower()
    if arch.startswith("armv7") or arch == "arm":
        return "arm"
    return _ARCH_ALIASES.get(arch, arch)


def host_triple() -> str:
    from tvm.target import codegen

    return str(codegen.llvm_get_system_triple())


def code_triple(target: Any) -> str | None:
    """The triple the CPU-side code of ``target`` (a tvm Target) is generated for; None means
    LLVM's default, i.e. this host's."""
    cpu = target.host if target.host is not None else target
    if cpu.kind.name != "llvm":
        return None
    triple = cpu.attrs.get("mtriple")
    return str(triple) if triple else None


def needs_cross_compiler(target: Any) -> bool:
    triple = code_triple(target)
    return triple is not None and triple_arch(triple) != triple_arch(host_triple())


def missing_compiler_reason(target: Any, cross_compiler: str | None) -> str | None:
    """Why the library for ``target`` could not be linked here, or None if it can."""
    triple = code_triple(target)
    if cross_compiler:
        if shutil.which(cross_compiler) is None:
            return (
                f"device.cross_compiler={cross_compiler} is not on PATH (for aarch64 on "
                "Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu)"
            )
        return None
    if needs_cross_compiler(target):
        return (
            f"the device's code is for {triple} but this host is {host_triple()}: set "
            f"device.cross_compiler (e.g. {triple_arch(triple or '')}-linux-gnu-g++)"
        )
    return None


def export_library(executable: Any, path: str | Path, cross_compiler: str | None) -> None:
    """``executable.export_library`` linked by ``cross_compiler`` when one is named."""
    if not cross_compiler:
        executable.export_library(str(path))
        return
    from tvm.support import cc

    executable.export_library(str(path), fcompile=cc.cross_compiler(cross_compiler))


def elf_machine(path: str | Path) -> str:
    """The architecture an ELF file is built for, read from its header (e_machine)."""
    with open(path, "rb") as f:
        header = f.read(20)
    if header[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    endian = "<" if header[5] == 1 else ">"
    (machine,) = struct.unpack(endian + "H", header[18:20])
    return ELF_MACHINES.get(machine, f"e_machine={machine}")


def metaschedule_export(cross_compiler: str, mod: Any) -> str:
    """MetaSchedule ``f_export``: a candidate linked for the board (module level so that the
    builder's worker processes can unpickle it)."""
    import os

    path = os.path.join(tempfile.mkdtemp(prefix="dlas-ms-"), "candidate.so")
    export_library(mod, path, cross_compiler)
    return path
