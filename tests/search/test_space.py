"""The conditional search space, on a made-up oracle (no Hydra, no runs)."""

from __future__ import annotations

import optuna
import pytest

from dlas.search.space import Categorical, Numeric, SpacePlan, Verdict, parse_space, signature

SPACE = [
    "model=a,b",
    "compression=dense,pruned,int8",
    "compression.amount=range(0.5,0.9,0.2)",
    "algorithm=direct,sparse,gemm",
    "dataset.root=/x",
]


def oracle(overrides: list[str], probes: list[str]) -> Verdict:
    """sparse needs compression=pruned; only pruned has an `amount`; int8 has no gemm."""
    cfg = dict(o.split("=", 1) for o in overrides)
    problems = []
    if cfg["algorithm"] == "sparse" and cfg["compression"] != "pruned":
        problems.append("sparse needs zeros")
    if cfg["algorithm"] == "gemm" and cfg["compression"] == "int8":
        problems.append("no int8 gemm")
    present = {"compression.amount"} if cfg["compression"] == "pruned" else set()
    return Verdict(problems, present & set(probes))


def is_valid(a: dict) -> bool:
    return oracle([f"{k}={v}" for k, v in a.items() if "." not in k], []).problems == [] and (
        ("compression.amount" in a) == (a["compression"] == "pruned")
    )


@pytest.fixture
def plan() -> SpacePlan:
    fixed, params = parse_space(SPACE)
    assert fixed == ["dataset.root=/x"]
    return SpacePlan.build(params, oracle)


def test_parse_kinds() -> None:
    _, params = parse_space(
        [
            "a=x,y",
            "b=choice(1,2)",
            "c=interval(0.1,0.9)",
            "d=tag(log,int(interval(8,64)))",
            "e=range(1,4)",
        ]
    )
    kinds = {p.path: p for p in params}
    assert isinstance(kinds["a"], Categorical) and kinds["a"].choices == ("x", "y")
    assert kinds["b"].choices == ("1", "2")
    assert isinstance(kinds["c"], Numeric) and not kinds["c"].integer
    assert kinds["d"].integer and kinds["d"].log and (kinds["d"].low, kinds["d"].high) == (8, 64)
    assert kinds["e"].grid_values() == [1, 2, 3]


def test_plan_keeps_only_valid_combinations(plan: SpacePlan) -> None:
    # 2 models x (dense: direct,gemm | pruned: 3 algos | int8: direct) = 12 valid, 6 invalid
    assert len(plan.valid) == 12 and len(plan.invalid) == 6
    assert all(reasons for _, reasons in plan.invalid)
    grid = plan.grid()
    # pruned configurations x 2 amounts
    assert len(grid) == 2 * (2 + 3 * 2 + 1) == plan.size()
    assert all(is_valid(a) for a in grid)
    assert len({signature(a) for a in grid}) == len(grid)


def test_allowed_follows_earlier_choices(plan: SpacePlan) -> None:
    assert plan.allowed("algorithm", {"model": "a", "compression": "dense"}) == ["direct", "gemm"]
    assert plan.allowed("algorithm", {"model": "a", "compression": "int8"}) == ["direct"]
    assert plan.allowed("algorithm", {"compression": "pruned"}) == ["direct", "sparse", "gemm"]


@pytest.mark.parametrize(
    "sampler",
    [optuna.samplers.RandomSampler(seed=1), optuna.samplers.TPESampler(seed=1, n_startup_trials=5)],
)
def test_sampling_never_proposes_invalid(plan: SpacePlan, sampler) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler)
    seen = set()
    for _ in range(60):
        trial = study.ask()
        a = plan.sample(trial)
        assert is_valid(a), a
        seen.add(signature(a))
        study.tell(trial, float(len(signature(a)) % 7))
    assert len(seen) > 8  # it explores, it is not stuck on one corner


def test_encode_replays_an_assignment(plan: SpacePlan) -> None:
    study = optuna.create_study()
    for a in plan.grid():
        params, dists = plan.encode(a)
        study.enqueue_trial(params)
        trial = study.ask()
        assert plan.sample(trial) == a
        study.tell(trial, 1.0)
        assert set(dists) == set(params)


def test_closest_keeps_the_model_and_switches_compression(plan: SpacePlan) -> None:
    target = {"model": "b", "compression": "dense", "algorithm": "sparse"}
    got = plan.closest(target, ["model", "compression"])
    assert got is not None and got["model"] == "b" and got["compression"] == "dense"
    assert got["algorithm"] != "sparse"  # dense has no valid sparse run
    assert plan.closest({"model": "c", "compression": "dense"}, ["model"]) is None


def test_no_valid_configuration_is_an_error() -> None:
    _, params = parse_space(["algorithm=choice(sparse)", "compression=dense,int8", "model=a"])
    plan = SpacePlan.build(params, oracle)
    assert not plan.valid
    with pytest.raises(ValueError, match="no valid configuration"):
        plan.sample(optuna.create_study().ask())


def test_dotted_choice_applies_only_where_its_key_exists() -> None:
    """compression.epochs exists for `pruned` only: it must not make dense/int8 invalid."""

    def keyed(overrides: list[str], probes: list[str]) -> Verdict:
        cfg = dict(o.split("=", 1) for o in overrides)
        if "compression.epochs" in cfg and cfg["compression"] != "pruned":
            return Verdict(["does not compose: Key 'epochs' not in 'CompressionConfig'"])
        problems = ["epochs=0 is not allowed"] if cfg.get("compression.epochs") == "0" else []
        present = {"compression.epochs"} if cfg["compression"] == "pruned" else set()
        return Verdict(problems, present & set(probes))

    _, params = parse_space(["compression.epochs=0,1,2", "compression=dense,pruned,int8"])
    plan = SpacePlan.build(params, keyed)
    grid = plan.grid()
    assert {"compression": "dense"} in grid and {"compression": "int8"} in grid
    pruned = [a for a in grid if a["compression"] == "pruned"]
    assert sorted(a["compression.epochs"] for a in pruned) == ["1", "2"]
    assert len(grid) == 4
    assert plan.invalid == [
        ({"compression": "pruned", "compression.epochs": "0"}, ["epochs=0 is not allowed"])
    ]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        a = plan.sample(trial)
        assert ("compression.epochs" in a) == (a["compression"] == "pruned")
        study.tell(trial, 0.0)
