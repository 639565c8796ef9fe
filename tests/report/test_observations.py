"""Every observation on hand-made run tables whose verdict is known: one that holds, one that
does not, one the runs cannot test (so each verdict can fail)."""

from __future__ import annotations

import pandas as pd
import pytest

from dlas.report.observations import OBSERVATIONS, STUDY_ORDER, Verdict, ordered, run_all
from tests.report.conftest import run, table

HOLDS, FAILS, UNTESTABLE = Verdict.HOLDS, Verdict.FAILS, Verdict.UNTESTABLE


# --- I: MACs, accuracy, latency ------------------------------------------------------------
def _six(latencies, accuracies):
    return table(
        *(
            run(model=f"m{i}", macs=(i + 1) * 1e8, latency=lat, accuracy=acc)
            for i, (lat, acc) in enumerate(zip(latencies, accuracies, strict=True))
        )
    )


I_CASES = {
    # Spearman rho: MACs-latency -0.09, MACs-top-1 -0.26, top-1-latency 0.09
    HOLDS: _six([3, 6, 1, 5, 2, 4], [0.5, 0.9, 0.7, 0.6, 0.8, 0.4]),
    FAILS: _six([1, 2, 3, 4, 5, 6], [0.5, 0.9, 0.7, 0.6, 0.8, 0.4]),  # latency ∝ MACs
    UNTESTABLE: _six([1, 2, 3], [0.5, 0.6, 0.7]),
}


# --- II: tuned sparse vs dense, by model size ----------------------------------------------
def _sparse_vs_dense(small_sparse: float, large_sparse: float | None, tuning="metaschedule"):
    rows = [
        run(model="s", tuning=tuning, latency=2.0),
        run(
            model="s",
            compression="weight_pruning",
            algorithm="sparse_gemm",
            tuning=tuning,
            latency=small_sparse,
        ),
    ]
    if large_sparse is not None:
        rows += [
            run(model="L", image_size=224, tuning=tuning, latency=20.0),
            run(
                model="L",
                image_size=224,
                compression="weight_pruning",
                algorithm="sparse_gemm",
                tuning=tuning,
                latency=large_sparse,
            ),
        ]
    return table(*rows)


II_CASES = {
    HOLDS: _sparse_vs_dense(1.0, 30.0),
    FAILS: _sparse_vs_dense(3.0, 30.0),
    UNTESTABLE: _sparse_vs_dense(1.0, 30.0, tuning="untuned"),
}


# --- III: size vs accuracy; smaller models more vulnerable ----------------------------------
def _three_models(accuracies, drops, n=3):
    rows = []
    for i, (acc, drop) in enumerate(list(zip(accuracies, drops, strict=True))[:n]):
        params = [1e6, 5e6, 10e6][i]
        rows.append(run(model=f"m{i}", params=params, accuracy=acc))
        rows.append(
            run(
                model=f"m{i}",
                params=params,
                compression="int8",
                accuracy=acc - drop / 100,
                drop=drop,
            )
        )
    return table(*rows)


III_CASES = {
    HOLDS: _three_models([0.9, 0.8, 0.95], [5, 3, 1]),  # rho(size, top-1)=0.5, rho(size, drop)=-1
    FAILS: _three_models([0.9, 0.8, 0.95], [1, 3, 5]),  # larger models lose more
    UNTESTABLE: _three_models([0.9, 0.8, 0.95], [5, 3, 1], n=2),
}


# --- IV: weight vs channel pruning ----------------------------------------------------------
def _pruning(cp_latency: float, with_cp: bool = True):
    rows = [
        run(latency=10.0),
        run(
            compression="weight_pruning", algorithm="sparse_gemm", sparsity=0.8, latency=5.0
        ),  # ratio 5, expect 5x, get 2x
    ]
    if with_cp:  # ratio 2, expect 2x
        rows.append(
            run(
                compression="channel_pruning",
                params=0.5e6,
                macs=0.5e8,
                dense_macs=1e8,
                latency=cp_latency,
            )
        )
    return table(*rows)


IV_CASES = {
    HOLDS: _pruning(6.0),  # CP 1.67x of 2x: faster-per-MAC, slower overall
    FAILS: _pruning(4.0),  # CP 2.5x: faster than WP
    UNTESTABLE: _pruning(6.0, with_cp=False),
}


# --- V: quantization speedup by data type and hardware ---------------------------------------
def _quant(d1: tuple[float, float], d2: tuple[float, float] | None, quantized: bool = True):
    rows = []
    for device, lat in (("cpu_a", d1), ("cpu_b", d2)):
        if lat is None:
            continue
        rows.append(run(device=device, latency=10.0))
        if quantized:
            rows.append(run(device=device, compression="fp16", latency=10.0 / lat[0]))
            rows.append(run(device=device, compression="int8", latency=10.0 / lat[1]))
    return table(*rows)


V_CASES = {
    HOLDS: _quant((2.0, 4.0), (1.25, 2.5)),
    FAILS: _quant((2.0, 2.0), (2.0, 2.0)),
    UNTESTABLE: _quant((2.0, 4.0), (1.25, 2.5), quantized=False),
}


# --- VI: fp16 negligible, int8 loses more, more on large models ------------------------------
def _drops(fp16: float, int8_small: float, int8_large: float, with_int8: bool = True):
    rows = []
    for model, size, int8 in (
        ("s1", 32, int8_small),
        ("s2", 32, int8_small),
        ("L", 224, int8_large),
    ):
        rows.append(run(model=model, image_size=size))
        rows.append(run(model=model, image_size=size, compression="fp16", drop=fp16))
        if with_int8:
            rows.append(run(model=model, image_size=size, compression="int8", drop=int8))
    return table(*rows)


VI_CASES = {
    HOLDS: _drops(0.2, 2.0, 5.0),
    FAILS: _drops(3.0, 2.0, 5.0),  # fp16 loses 3 points
    UNTESTABLE: _drops(0.2, 2.0, 5.0, with_int8=False),
}


# --- VII / VIII: best tuned dense algorithm on CPU / GPU --------------------------------------
def _algorithms(fastest: str, device: str = "local_cpu", tuning: str = "metaschedule"):
    rows = []
    for comp in ("dense", "int8"):
        for algo in ("direct", "gemm", "spatial_pack"):
            lat = 1.0 if algo == fastest else 2.0
            rows.append(
                run(compression=comp, algorithm=algo, tuning=tuning, device=device, latency=lat)
            )
    return table(*rows)


VII_CASES = {
    HOLDS: _algorithms("spatial_pack"),
    FAILS: _algorithms("gemm"),
    UNTESTABLE: _algorithms("spatial_pack", tuning="untuned"),
}
VIII_CASES = {
    HOLDS: _algorithms("direct", device="cuda"),
    FAILS: _algorithms("spatial_pack", device="cuda"),
    UNTESTABLE: _algorithms("direct", device="local_cpu"),
}


# --- IX: best sparse algorithm ---------------------------------------------------------------
def _sparse(fastest: str, algorithms=("sparse_direct", "sparse_gemm", "sparse_spatial_pack")):
    return table(
        *(
            run(
                compression="weight_pruning",
                algorithm=a,
                sparsity=0.5,
                latency=1.0 if a == fastest else 2.0,
            )
            for a in algorithms
        )
    )


IX_CASES = {
    HOLDS: _sparse("sparse_gemm"),
    FAILS: _sparse("sparse_direct"),
    UNTESTABLE: _sparse("sparse_gemm", algorithms=("sparse_gemm",)),
}


# --- X: pruned models vs their expected speedup ----------------------------------------------
def _expected(wp_latency: float, cp_latency: float, with_dense: bool = True):
    rows = [
        run(compression="weight_pruning", sparsity=0.8, latency=wp_latency),  # expects 5x
        run(compression="channel_pruning", macs=0.5e8, dense_macs=1e8, latency=cp_latency),  # 2x
    ]
    if with_dense:
        rows.append(run(latency=10.0))
    return table(*rows)


X_CASES = {
    HOLDS: _expected(5.0, 7.0),  # 2x of 5x, 1.4x of 2x
    FAILS: _expected(2.0, 5.0),  # both reach it
    UNTESTABLE: _expected(5.0, 7.0, with_dense=False),
}


# --- XI / XII: tuning ------------------------------------------------------------------------
def _tuning(gains: dict[tuple[str, str], float], untuned: dict[tuple[str, str], float], tuned=True):
    rows = []
    for (comp, algo), lat in untuned.items():
        rows.append(
            run(
                compression=comp,
                algorithm=algo,
                latency=lat,
                sparsity=0.5 if comp == "weight_pruning" else 0.0,
            )
        )
        if tuned:
            rows.append(
                run(
                    compression=comp,
                    algorithm=algo,
                    tuning="metaschedule",
                    latency=lat / gains[(comp, algo)],
                    sparsity=0.5 if comp == "weight_pruning" else 0.0,
                )
            )
    return table(*rows)


_UNTUNED = {
    ("dense", "direct"): 4.0,
    ("dense", "gemm"): 5.0,
    ("weight_pruning", "direct"): 3.0,
    ("int8", "direct"): 2.0,
}
XI_CASES = {
    # gemm gains most: the fastest algorithm changes from direct to gemm
    HOLDS: _tuning(
        {
            ("dense", "direct"): 2.0,
            ("dense", "gemm"): 5.0,
            ("weight_pruning", "direct"): 2.0,
            ("int8", "direct"): 3.0,
        },
        _UNTUNED,
    ),
    FAILS: _tuning({k: 1.1 for k in _UNTUNED}, _UNTUNED),
    UNTESTABLE: _tuning({}, _UNTUNED, tuned=False),
}
XII_CASES = {
    HOLDS: _tuning(
        {
            ("dense", "direct"): 3.0,
            ("dense", "gemm"): 3.0,
            ("weight_pruning", "direct"): 1.5,
            ("int8", "direct"): 1.2,
        },
        _UNTUNED,
    ),
    FAILS: _tuning(
        {
            ("dense", "direct"): 3.0,
            ("dense", "gemm"): 3.0,
            ("weight_pruning", "direct"): 4.0,
            ("int8", "direct"): 1.2,
        },
        _UNTUNED,
    ),
    UNTESTABLE: _tuning({("dense", "direct"): 3.0}, {("dense", "direct"): 4.0}),
}


# --- XIII: device ranking --------------------------------------------------------------------
def _devices(b_latencies: list[float], devices=("cpu_a", "cpu_b")):
    rows = []
    for i, lat_b in enumerate(b_latencies):
        rows.append(run(algorithm=f"a{i}", device=devices[0], latency=2.0))
        rows.append(run(algorithm=f"a{i}", device=devices[1], latency=lat_b))
    return table(*rows)


XIII_CASES = {
    HOLDS: _devices([1.0, 1.0, 1.1, 0.9]),
    FAILS: _devices([1.0, 1.0, 3.0, 3.0]),
    UNTESTABLE: _devices([1.0, 1.0], devices=("cpu_a", "cpu_a")),
}

CASES = {
    "I": I_CASES,
    "II": II_CASES,
    "III": III_CASES,
    "IV": IV_CASES,
    "V": V_CASES,
    "VI": VI_CASES,
    "VII": VII_CASES,
    "VIII": VIII_CASES,
    "IX": IX_CASES,
    "X": X_CASES,
    "XI": XI_CASES,
    "XII": XII_CASES,
    "XIII": XIII_CASES,
}


@pytest.mark.parametrize(
    ("key", "expected"),
    [(k, v) for k in STUDY_ORDER for v in (HOLDS, FAILS, UNTESTABLE)],
    ids=lambda x: x.name if isinstance(x, Verdict) else x,
)
def test_verdict(key: str, expected: Verdict) -> None:
    finding = OBSERVATIONS.get(key)(CASES[key][expected])
    assert finding.verdict == expected, (finding.headline, finding.sentence, finding.missing)
    assert finding.key == key and finding.test
    if expected == UNTESTABLE:
        assert finding.missing and all(m for m in finding.missing)
        assert not finding.run_ids
    else:
        assert finding.run_ids and finding.headline != "—"


def test_every_study_observation_has_cases_and_runs_in_study_order() -> None:
    assert [o.key for o in ordered()][: len(STUDY_ORDER)] == STUDY_ORDER
    assert set(CASES) == set(STUDY_ORDER)


def test_partly_testable_observations_name_the_missing_part() -> None:
    only_small = _sparse_vs_dense(1.0, None)
    finding = OBSERVATIONS.get("II")(only_small)
    assert finding.verdict == HOLDS and "ImageNet-size" in finding.missing[0]
    one_device = _quant((2.0, 4.0), None)
    finding = OBSERVATIONS.get("V")(one_device)
    assert finding.verdict == HOLDS and ">= 2 devices" in finding.missing[0]
    finding = OBSERVATIONS.get("IX")(_sparse("sparse_gemm"))
    assert any("GPU" in m for m in finding.missing)


def test_failed_and_unmeasured_runs_are_left_out() -> None:
    rows = I_CASES[FAILS]
    broken = pd.concat(
        [
            rows,
            table(
                run(model="x", macs=9e8, latency=0.01, status="FAILED"),
                run(model="y", latency=None),
            ),
        ]
    )
    assert OBSERVATIONS.get("I")(broken).verdict == FAILS


def test_an_observation_that_raises_is_reported_untestable(monkeypatch: pytest.MonkeyPatch) -> None:
    from dlas.report.observations import base

    def boom(table, obs):
        raise ZeroDivisionError("bad data")

    monkeypatch.setattr(OBSERVATIONS.get("I"), "check", boom)
    (finding,) = base.run_all(I_CASES[HOLDS], keys=["I"])
    assert finding.verdict == UNTESTABLE and "ZeroDivisionError" in finding.missing[0]


def test_empty_table_is_untestable_everywhere() -> None:
    findings = run_all(table())
    assert len(findings) >= 13 and all(f.verdict == UNTESTABLE for f in findings)
