"""The search asks THE validity rules on the composed config (no runs: composition only)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

import dlas.conf
from dlas.search.oracle import ComposeOracle
from dlas.search.space import SpacePlan, parse_space
from tests.search.conftest import TEST_RULE

REPO = Path(__file__).resolve().parents[2]


def compose_job(overrides: list[str]) -> DictConfig:
    with initialize_config_module("dlas.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(dlas.conf.__file__).parent / group).glob("*.yaml"))


def test_oracle_reports_rules_schema_errors_and_choices(warmup_rule) -> None:
    oracle = ComposeOracle(compose_job, ["model=tiny_cnn"])
    assert oracle.inspect(["device.warmup_runs=1"]).problems == []
    assert oracle.inspect(["device.warmup_runs=2"]).problems == [TEST_RULE]
    assert "device.timed_runs" in oracle.inspect(["device.timed_runs=0"]).problems[0]
    seen = oracle.inspect(["compression=dense"])
    assert seen.choices["compression"] == "dense" and seen.choices["model"] == "tiny_cnn"
    assert "does not compose" in oracle.inspect(["compression=no_such_option"]).problems[0]


def test_plan_on_the_real_config_groups(warmup_rule) -> None:
    """Knobs of one option apply to that option only; invalid ones are listed with reasons."""
    pruning = [
        c
        for c in options("compression")
        if "amount" in compose_job([f"compression={c}"]).compression
    ]
    if not pruning:
        pytest.skip("no compression option with an `amount` yet")
    fixed, params = parse_space(
        [
            "compression=dense," + pruning[0],
            "compression.amount=range(0.25,1.0,0.25)",
            "device.warmup_runs=1,2",
        ]
    )
    plan = SpacePlan.build(params, ComposeOracle(compose_job, fixed))
    assert len(plan.invalid) == 2 and all(r == [TEST_RULE] for _, r in plan.invalid)
    grid = plan.grid()
    assert len(grid) == 1 + 3  # dense, and the pruning option at 3 amounts
    assert all(("compression.amount" in a) == (a["compression"] != "dense") for a in grid)


def test_sparse_algorithms_need_a_pruned_model() -> None:
    from dlas.algorithms import ALGORITHMS
    from dlas.compression import COMPRESSIONS

    sparse = [
        a
        for a in options("algorithm")
        if a in ALGORITHMS and getattr(ALGORITHMS.get(a), "sparse", False)
    ]
    dense = [
        c
        for c in options("compression")
        if c in COMPRESSIONS and not COMPRESSIONS.get(c).sparse_weights
    ]
    if not sparse or not dense:
        pytest.skip("no sparse algorithm option yet")
    oracle = ComposeOracle(compose_job, ["model=tiny_cnn"])
    assert oracle.inspect([f"compression={dense[0]}", f"algorithm={sparse[0]}"]).problems


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "experiments").glob("*.yaml")))
def test_experiment_files_select_the_sweeper_and_parse(name: str) -> None:
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_module("dlas.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={name}"], return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()  # glob(*) lists a group's options
        fixed, params = parse_space(
            [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()], loader
        )
    assert cfg.hydra.sweeper._target_.endswith("DlasOptunaSweeper")
    assert params and not fixed
    for p in params:
        if p.path in ("model", "compression", "algorithm", "tuning"):
            assert set(p.choices) <= set(options(p.path)), p
