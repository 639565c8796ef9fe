"""The host target has the CPU features the host has, whatever LLVM's name for its CPU implies."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from dlas.algorithms.shapes import has_feature
from dlas.devices import local_cpu
from dlas.devices.local_cpu import (
    HOST_FEATURES,
    cpuinfo_flags,
    feature_corrections,
    resolve_target_dict,
)

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model\t\t: 167
flags\t\t: fpu avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16
bogomips\t: 5200.00

processor\t: 1
flags\t\t: fpu
"""
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU part\t: 0xd09\n"


def _has(target_dict: dict, feature: str) -> bool:
    import tvm

    return has_feature(feature, tvm.target.Target(target_dict))


def test_cpuinfo_flags_reads_the_first_processor_on_x86_and_arm():
    assert "amx_tile" in cpuinfo_flags(X86_CPUINFO)
    assert "fpu" in cpuinfo_flags(X86_CPUINFO) and "bogomips" not in cpuinfo_flags(X86_CPUINFO)
    assert cpuinfo_flags(ARM_CPUINFO) == {"fp", "asimd", "asimddp"}
    assert cpuinfo_flags("processor\t: 0\n") is None


def test_a_model_read_as_an_older_cpu_gets_the_features_the_host_has():
    """A KVM Sapphire Rapids reported as model 167 is "rocketlake" to LLVM: no AMX, no BF16."""
    flags = cpuinfo_flags(X86_CPUINFO)
    corrections = feature_corrections("rocketlake", flags)
    assert {"+amx-tile", "+amx-int8", "+amx-bf16", "+avx512bf16"} <= set(corrections)
    assert not [c for c in corrections if c.startswith("-")]
    target = {"kind": "llvm", "mcpu": "rocketlake", "mattr": corrections}
    assert not _has({"kind": "llvm", "mcpu": "rocketlake"}, "amx-int8")
    assert _has(target, "amx-int8") and _has(target, "avx512bf16")


def test_features_the_host_masks_are_turned_off():
    corrections = feature_corrections("sapphirerapids", {"avx2"})
    assert "-avx512f" in corrections and "-amx-tile" in corrections
    assert "+avx2" not in corrections and "-avx2" not in corrections
    target = {"kind": "llvm", "mcpu": "sapphirerapids", "mattr": corrections}
    assert not _has(target, "avx512f") and not _has(target, "amx-tile") and _has(target, "avx2")


def test_a_cpu_that_matches_its_flags_needs_no_corrections():
    flags = {
        f
        for f, feature in HOST_FEATURES.items()
        if _has({"kind": "llvm", "mcpu": "icelake-server"}, feature)
    }
    assert flags and feature_corrections("icelake-server", flags) == []


def test_a_feature_the_config_names_is_kept(monkeypatch):
    monkeypatch.setattr(local_cpu, "host_feature_corrections", lambda: ("+amx-tile", "+avx512bf16"))
    resolved = resolve_target_dict({"kind": "llvm", "mcpu": "auto", "mattr": ["-amx-tile"]}, 2)
    assert resolved["mattr"] == ["-amx-tile", "+avx512bf16"]
    named = resolve_target_dict({"kind": "llvm", "mcpu": "skylake-avx512"}, 2)
    assert "mattr" not in named  # a CPU the config names is compiled for as named


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="no /proc/cpuinfo on this OS")
def test_this_hosts_target_has_exactly_the_listed_features_it_has():
    flags = cpuinfo_flags(Path("/proc/cpuinfo").read_text())
    if flags is None:
        pytest.skip(f"/proc/cpuinfo on {platform.machine()} lists no feature flags")
    target = resolve_target_dict({"kind": "llvm", "mcpu": "auto"}, 2)
    for flag, feature in HOST_FEATURES.items():
        if feature == "dotprod" and platform.machine() != "aarch64":
            continue
        assert _has(target, feature) == (flag in flags), (flag, target)
