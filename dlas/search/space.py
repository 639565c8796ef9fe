"""The search space: Hydra sweep overrides → parameters, sampled conditionally on validity.

A space is declared exactly like a Hydra sweep (``compression=dense,int8``,
``algorithm=glob(*)``, ``compression.amount=interval(0.3,0.9)``,
``tuning.trials=tag(log,int(interval(8,64)))``, ``device.num_threads=range(1,5)``), so one
command line works for both the grid and the guided sweeper.

Categorical parameters are sampled first, in declared order, each restricted to the values that
still have a valid completion according to :mod:`dlas.validity` on the composed config (see
:class:`SpacePlan`). Numeric parameters follow, and only those whose key exists in the composed
config (``compression.amount`` applies to pruning, not to ``dense``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

Assignment = dict[str, Any]  # parameter path → value, in the space's order


@dataclass(frozen=True)
class Param:
    """One searched override. ``key`` is the override key as typed (``+`` prefixes kept)."""

    key: str

    @property
    def path(self) -> str:
        return self.key.lstrip("+~")

    def override(self, value: Any) -> str:
        return f"{self.key}={value}"

    def grid_values(self) -> list[Any]:
        raise ValueError(f"{self.key}: a grid needs discrete values (use a list or range())")


@dataclass(frozen=True)
class Categorical(Param):
    choices: tuple[str, ...] = ()

    def name(self, allowed: Sequence[str]) -> str:
        # Optuna fixes a categorical parameter's choices per name, so a restricted choice set
        # gets its own name; trials with the same restriction still share a model in TPE.
        if tuple(allowed) == self.choices:
            return self.path
        return f"{self.path}[{','.join(allowed)}]"

    def grid_values(self) -> list[Any]:
        return list(self.choices)


@dataclass(frozen=True)
class Numeric(Param):
    low: float = 0.0
    high: float = 1.0
    integer: bool = False
    log: bool = False
    step: float | None = None

    def distribution(self) -> BaseDistribution:
        if self.integer:
            return IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def grid_values(self) -> list[Any]:
        if self.step is None:
            return super().grid_values()
        count = int(round((self.high - self.low) / self.step)) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.integer else [round(v, 12) for v in values]


@dataclass
class Verdict:
    """What composing one combination said: why it cannot run (empty: it can), and which of the
    probed config keys exist in it."""

    problems: list[str]
    present: set[str] = field(default_factory=set)


# overrides, keys to probe → verdict. The sweeper's oracle composes the job config and asks
# dlas.validity; tests and the replay benchmark can pass their own.
Oracle = Callable[[list[str], Sequence[str]], Verdict]


def parse_space(
    overrides: Iterable[str], config_loader: Any = None
) -> tuple[list[str], list[Param]]:
    """Split Hydra overrides into fixed ones (kept as typed) and searched parameters."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, Glob, IntervalSweep, RangeSweep

    parser = OverridesParser.create(config_loader=config_loader)
    fixed: list[str] = []
    params: dict[str, Param] = {}
    for ov in parser.parse_overrides(list(overrides)):
        key = ov.get_key_element()
        if not ov.is_sweep_override():
            fixed.append(ov.input_line)
            continue
        value = ov.value()
        tags = getattr(value, "tags", set()) or set()
        if isinstance(value, (ChoiceSweep, Glob)):
            param: Param = Categorical(key, tuple(ov.sweep_string_iterator()))
        elif isinstance(value, RangeSweep):
            ints = all(float(x).is_integer() for x in (value.start, value.stop, value.step))
            # range() excludes its stop, like Python's.
            # Rounded: float ranges accumulate error (0.5 + 0.2 = 0.7000000000000001).
            values = [round(float(v), 12) for v in ov.sweep_iterator()]
            param = Numeric(
                key, values[0], values[-1], integer=ints, log="log" in tags, step=float(value.step)
            )
        elif isinstance(value, IntervalSweep):
            ints = isinstance(value.start, int) and isinstance(value.end, int)
            param = Numeric(key, value.start, value.end, integer=ints, log="log" in tags)
        else:
            raise ValueError(f"unsupported sweep in {ov.input_line!r}")
        params[param.path] = param  # a later override of the same key wins (command line)
    return fixed, list(params.values())


def signature(assignment: Assignment) -> str:
    """A stable key for 'the same configuration' (resume, duplicates, replay)."""
    return json.dumps(sorted((k, str(v)) for k, v in assignment.items()))


def to_overrides(params: Sequence[Param], assignment: Assignment) -> list[str]:
    return [p.override(assignment[p.path]) for p in params if p.path in assignment]


Combo = dict[str, str]  # categorical path → value, only the parameters that apply


def _matches(combo: Combo, prefix: Assignment) -> bool:
    return all(combo.get(k) == v for k, v in prefix.items())


@dataclass
class SpacePlan:
    """The categorical combinations that can run, found once by composing each of them.

    Group choices (``compression=...``) are enumerated first; a dotted parameter
    (``compression.finetune_epochs=1,2``, ``compression.amount=...``) applies only where the
    composed config has its key, so it never makes ``compression=dense`` invalid.
    """

    params: list[Param]
    valid: list[tuple[Combo, frozenset[str]]]  # combination, numeric paths that apply
    invalid: list[tuple[Assignment, list[str]]]

    @classmethod
    def build(cls, params: list[Param], oracle: Oracle) -> SpacePlan:
        groups = [p for p in params if isinstance(p, Categorical) and "." not in p.path]
        dotted = [p for p in params if isinstance(p, Categorical) and "." in p.path]
        numeric = [p.path for p in params if isinstance(p, Numeric) and not p.key.startswith("+")]
        always = frozenset(
            p.path for p in params if isinstance(p, Numeric) and p.key.startswith("+")
        )
        probes = [p.path for p in dotted if not p.key.startswith("+")] + numeric
        valid, invalid = [], []
        for values in itertools.product(*(p.choices for p in groups)):
            base = dict(zip([p.path for p in groups], values, strict=True))
            verdict = oracle(to_overrides(groups, base), probes)
            applies = [p for p in dotted if p.key.startswith("+") or p.path in verdict.present]
            if not applies:
                if verdict.problems:
                    invalid.append((base, verdict.problems))
                else:
                    valid.append((base, frozenset(verdict.present) & set(numeric) | always))
                continue
            for extra in itertools.product(*(p.choices for p in applies)):
                combo = {**base, **dict(zip([p.path for p in applies], extra, strict=True))}
                cats = groups + applies
                full = oracle(to_overrides(cats, combo), numeric)
                if full.problems:
                    invalid.append((combo, full.problems))
                else:
                    valid.append((combo, frozenset(full.present) | always))
        return cls(params, valid, invalid)

    @property
    def categoricals(self) -> list[Categorical]:
        """In sampling order: group choices first, then dotted keys (each in declared order)."""
        cats = [p for p in self.params if isinstance(p, Categorical)]
        return sorted(cats, key=lambda p: "." in p.path)

    @property
    def numerics(self) -> list[Numeric]:
        return [p for p in self.params if isinstance(p, Numeric)]

    def allowed(self, path: str, prefix: Assignment) -> list[str]:
        """Values of categorical ``path`` with a valid completion after ``prefix`` (empty: the
        parameter does not apply there)."""
        seen = {combo[path] for combo, _ in self.valid if path in combo and _matches(combo, prefix)}
        param = next(p for p in self.categoricals if p.path == path)
        return [c for c in param.choices if c in seen]

    def applicable(self, combo: Combo) -> frozenset[str]:
        for candidate, present in self.valid:
            if candidate == combo:
                return present
        raise KeyError(f"not a valid combination: {combo}")

    def is_finite(self) -> bool:
        return all(p.step is not None for p in self.numerics)

    def size(self) -> int | None:
        return len(self.grid()) if self.is_finite() else None

    def sample(self, trial: Any) -> Assignment:
        """Suggest one valid configuration on an Optuna trial (enqueued values are honoured)."""
        return self._walk(lambda path, name, dist: _suggest(trial, name, dist))

    def encode(self, assignment: Assignment) -> tuple[dict[str, Any], dict[str, BaseDistribution]]:
        """The Optuna parameter names, values and distributions :meth:`sample` would record."""
        params: dict[str, Any] = {}
        dists: dict[str, BaseDistribution] = {}

        def record(path: str, name: str, dist: BaseDistribution) -> Any:
            value = assignment[path]
            params[name], dists[name] = value, dist
            return value

        self._walk(record)
        return params, dists

    def _walk(self, choose: Callable[[str, str, BaseDistribution], Any]) -> Assignment:
        if not self.valid:
            raise ValueError("the search space has no valid configuration")
        combo: Combo = {}
        for p in self.categoricals:
            allowed = self.allowed(p.path, combo)
            if allowed:
                combo[p.path] = choose(p.path, p.name(allowed), CategoricalDistribution(allowed))
        out: Assignment = dict(combo)
        present = self.applicable(combo)
        for p in self.numerics:
            if p.path in present:
                out[p.path] = choose(p.path, p.path, p.distribution())
        return self._ordered(out)

    def _ordered(self, assignment: Assignment) -> Assignment:
        return {p.path: assignment[p.path] for p in self.params if p.path in assignment}

    def closest(self, target: Assignment, must: Iterable[str]) -> Assignment | None:
        """The valid configuration that agrees with ``target`` on every path in ``must`` and on
        as many other categoricals as possible (None if there is none)."""
        best: tuple[Combo, frozenset[str]] | None = None
        score = -1
        for combo, present in self.valid:
            if any(combo.get(m) != target.get(m) for m in must):
                continue
            agree = sum(combo[c] == target.get(c) for c in combo)
            if agree > score:
                best, score = (combo, present), agree
        if best is None:
            return None
        out: Assignment = dict(best[0])
        for p in self.numerics:
            if p.path in best[1]:
                out[p.path] = target.get(p.path, int(p.low) if p.integer else p.low)
        return self._ordered(out)

    def grid(self) -> list[Assignment]:
        """Every valid configuration (numeric parameters need discrete values)."""
        out = []
        for combo, present in self.valid:
            nums = [p for p in self.numerics if p.path in present]
            for values in itertools.product(*(p.grid_values() for p in nums)):
                out.append(
                    self._ordered(
                        {**combo, **dict(zip([p.path for p in nums], values, strict=True))}
                    )
                )
        return out


def _suggest(trial: Any, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
