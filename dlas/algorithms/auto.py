"""Auto: every conv2d runs whichever eligible algorithm is fastest for its workload on the
device, measured rather than guessed.

For each conv, each candidate (direct, gemm, spatial_pack, winograd; the sparse ones too where
at least SPARSE_MIN_ZEROS of the layer's weights are zero) that would really run this layer —
not fall back to another — is built alone with its default schedule and timed on this machine
(batch 1, median of ``repeat`` calls, the candidates taking turns). Each call is timed with
cold caches, as a layer's weights are in a model at batch 1. The times are cached per
(workload, layout, target, candidates, repeat, rounds, sparsity) like tuning records, so later
runs and other models with the same workload reuse them; the layer table lists every
candidate's time in its ``candidates`` column. The whole model so chosen is then raced against
each whole-graph layout of ``graph_candidates`` (blocked, its layers running the kernels their
sizes give, and again running whichever kernel times faster in its layout), timed as the run
times its latency, and the fastest is built (``choose_lowering``). How candidates are timed:
:mod:`.timing`.

    python -m dlas.run algorithm=auto                              # untuned, measured choice
    python -m dlas.run algorithm=auto tuning=metaschedule          # then tune the chosen kernels
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from dlas.cache import Cache, write_atomic

from . import blocked
from .base import Algorithm, layer_kernels
from .constants import value_of
from .lowering import LoweredModule, lower, schedule_defaults
from .registry import ALGORITHMS
from .shapes import ROW_COLUMNS, ConvSpec, describe_times
from .sparse import sparsity
from .timing import ROUNDS, time_blocked_convs, time_convs, time_models

log = logging.getLogger(__name__)

DENSE_CANDIDATES = ("direct", "gemm", "spatial_pack", "winograd")
# Whole-graph layouts the per-layer choice is raced against, as whole models.
GRAPH_CANDIDATES = ("blocked",)
SPARSE_CANDIDATES = ("sparse_direct", "sparse_gemm", "sparse_spatial_pack")
# The share of zero weights from which a layer's sparse candidates are timed. Below it the CSR
# kernels never won (auto's timer, 2-core AVX2 EPYC; 3x3 layers of 32-128 channels at 14-32 px
# and a 256-channel 1x1: at 5% and 30% zeros 1.04-1.35x the fastest dense candidate, at 50%
# 0.99-1.19x, at 70% 0.65-0.88x), and int8 weights have a few zeros where they round to 0.
SPARSE_MIN_ZEROS = 0.3
# Bump when what a candidate's timing means changes (kernels, protocol).
# 31: packs of few channel planes with the channel loop unrolled (the stem's); 30: 2-vector panels
# where 4 vectors leave bands of few tiles, and on wide rows from 257 input channels; 29: pointwise
# panels of 2 vectors; 28: 1x1 layers of 512+ input channels in pointwise panels (AVX-512); 27: 3x3
# layers on small maps take their rows inside each channel chunk; 26: blocked's winograd_2x2 kernel;
# 24-25: a Winograd product over few tiles with one vector; 23: Winograd's pad and epilogue by the
# shared helpers; 22: Winograd's V by tile position; 21: a blocked pool's pad per output row; 20:
# Winograd's separable transforms, pad and epilogue per task; 19: means in parallel by the elements
# they read; 18: blocked's depthwise tasks split as the layer before split their input; 17: tiles
# whose weights fit in L1 reduce in registers; 16: the race times 5x the calls; 15: blocked's
# kernels timed in its race; 14: candidates timed with cold caches; 13: direct's pointwise tiles on
# odd-vector planes; 12: candidates timed round-robin; 32: more channel vectors in 1-pixel
# tiles (7-px maps on AVX2); 33: blocked convs skip the padding channels of their input; 34:
# chunked tiles reduce 16 KiB of weights a pass on AVX2; 35: int8/bf16 gemm makes its im2col rows
# in parallel over output rows (4.4x on int8 ResNet18-224)
CHOICES_VERSION = 35
# Bump when what the whole-model race means changes. 2: warmed up as the run's latency,
# blocked with its own kernels too; 3: blocked puts input gates in 1x1 convs' weights; 4: 3x3
# layers on small maps take their rows inside each channel chunk; 5: pointwise panels;
# 6: panels of 2 vectors; 7: more 2-vector panels (bands of few tiles, wide rows); 8: the
# stem's pack with its channel loop unrolled; 9: more channel vectors in 1-pixel tiles;
# 10: blocked convs skip the padding channels of their input; 11: chunked tiles reduce 16 KiB
# of weights a pass on AVX2.
RACE_VERSION = 11
# The whole-model race makes this many times a layer's calls, in as many times its rounds: the
# two lowerings often run within 5% of each other. Re-raced 24 times each way, VGG-16-32's
# per-layer over blocked ranged 0.946-1.072 with 20 calls in 5 rounds, 0.968-1.028 with 100
# in 25 (benchmarks/auto_race.py, Zen 4, 2 cores, one untimed call per block). Warmed up as
# now, 6 races each of ResNet18-32 and VGG-16-32 picked blocked every time at both sizes
# (per-layer 1.07-1.13x and blocked_timed 1.01-1.05x its time; Sapphire Rapids, 2 cores).
RACE_SCALE = 5


@ALGORITHMS.register("auto")
class Auto(Algorithm):
    name = "auto"
    composite = True

    def __init__(
        self,
        candidates: list[str] | tuple[str, ...] = DENSE_CANDIDATES,
        sparse_candidates: list[str] | tuple[str, ...] = SPARSE_CANDIDATES,
        cache_dir: str | None = None,
        repeat: int = 20,
        rounds: int = ROUNDS,
        graph_candidates: list[str] | tuple[str, ...] = GRAPH_CANDIDATES,
    ) -> None:
        super().__init__()
        self.candidates = list(candidates)
        self.sparse_candidates = list(sparse_candidates)
        self.graph_candidates = list(graph_candidates)
        whole = [n for n in ALGORITHMS.names() if ALGORITHMS.get(n).whole_graph]
        if unknown := [n for n in self.graph_candidates if n not in whole]:
            raise ValueError(
                f"algorithm.graph_candidates: {', '.join(unknown)} is not a whole-graph "
                f"algorithm; expected among {', '.join(whole) or 'none'}"
            )
        self.cache = Cache(Path(cache_dir).expanduser()) if cache_dir else None
        self.repeat = repeat
        self.rounds = rounds
        kernels = layer_kernels()
        unknown = [n for n in [*self.candidates, *self.sparse_candidates] if n not in kernels]
        if unknown or not self.candidates:
            raise ValueError(
                f"algorithm=auto: candidates must be non-empty and among {', '.join(kernels)}; "
                f"got {', '.join(unknown) or 'none'}"
            )
        self._weight: np.ndarray | None = None
        self._times: dict[str, float] = {}

    def algorithms(self) -> list[str]:
        # The sparse candidates join only on pruned weights, where they can run.
        return list(self.candidates)

    def required_algorithms(self) -> list[str]:
        return []  # a candidate that cannot compute a layer's dtype is simply not timed

    def conv2d(self, bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        self._weight, self._times = value_of(call.args[1]), {}
        out = super().conv2d(bb, call)
        if self._times:
            self.layers[-1]["candidates"] = describe_times(self._times)
        return out

    def select(self, spec: ConvSpec) -> tuple[Algorithm, str]:
        if self._weight is None:  # nothing to time with: the plain default
            return ALGORITHMS.get(self.candidates[0])().select(spec)
        names = list(self.candidates)
        if sparsity(self._weight) >= SPARSE_MIN_ZEROS:
            names += self.sparse_candidates
        eligible = {}
        for name in names:
            dtypes = ALGORITHMS.get(name).dtypes
            if dtypes is not None and spec.dtype not in dtypes:
                continue
            impl, _ = ALGORITHMS.get(name)().select(spec)
            if impl.name == name:  # a candidate that falls back is its fallback, already listed
                eligible[name] = impl
        if len(eligible) <= 1:
            return (next(iter(eligible.values())) if eligible else ALGORITHMS.get("direct")()), ""
        self._times = self._timed(spec, self._weight, sorted(eligible))
        best = min(self._times, key=self._times.__getitem__)
        return eligible[best], ""

    def choose_lowering(
        self, mod: tvm.IRModule, lowered: LoweredModule, target: tvm.target.Target, schedule: bool
    ) -> LoweredModule:
        """The per-layer choice, or a whole-graph layout (``graph_candidates``: blocked keeps
        16-channel blocks between layers, which no per-layer choice can) if the whole model
        built with it runs faster here. Decided once per (model, target) and cached; the
        layer table's last row (op ``graph``) shows every time."""
        if not self.graph_candidates:
            return lowered
        _require_host(target)
        key = {
            "version": CHOICES_VERSION,
            "race": RACE_VERSION,
            "graph": tvm_ffi.structural_hash(mod),
            "target": str(target),
            "candidates": [*self.candidates, *self.sparse_candidates],
            "graph_candidates": self.graph_candidates,
            "repeat": self.repeat,
            "rounds": self.rounds,
        }
        path = self.cache.entry("graph_choices", key, ".json") if self.cache else None
        layouts = self.graph_layouts()
        raced = {self.name: lowered}  # the alternatives lowered (and scheduled) to be timed
        if path is not None and path.exists():
            times = json.loads(path.read_text())["times_ms"]
        else:
            for name, layout in layouts.items():
                raced[name] = lower(mod, layout, target)
                if any(
                    _same_kernels(raced[name], raced[other]) for other in raced if other != name
                ):
                    del raced[name]  # the same lowering as one already raced
            libraries = {name: candidate.mod for name, candidate in raced.items()}
            if not schedule:
                libraries[self.name] = schedule_defaults(lowered.mod, target)
            times = time_models(
                libraries, target, self.repeat * RACE_SCALE, self.rounds * RACE_SCALE
            )
            log.info("algorithm=auto, whole model: %s", times)
            if path is not None:
                write_atomic(path, json.dumps({"spec": key, "times_ms": times}, indent=1).encode())
        best = min(times, key=times.__getitem__)
        if best == self.name or (schedule and best in raced):
            chosen = raced[best]  # lowered as the caller asked: no second lowering
        else:
            chosen = lower(mod, layouts[best], target, schedule=schedule)
        chosen.layers.append(
            {
                "layer": len(chosen.layers),
                **dict.fromkeys(ROW_COLUMNS),
                "op": "graph",
                "algorithm": best,
                "fallback": "",
                "candidates": describe_times(times),
            }
        )
        return chosen

    def graph_layouts(self) -> dict[str, Algorithm]:
        """Each whole-graph candidate as raced; blocked twice: its layers running the kernels
        their sizes give (``blocked``, as ``algorithm=blocked`` does) and running whichever of
        its kernels (Winograd or spatial_pack's) times faster in its layout
        (``blocked_timed``). Kernels timed alone and cold are not the whole story: warmed up in
        the model, ResNet18-32's blocked ran 2.49-2.55 ms with its own kernels and 2.74-2.79 ms
        with the timed ones."""
        layouts: dict[str, Algorithm] = {}
        for name in self.graph_candidates:
            layouts[name] = ALGORITHMS.get(name)()
            if name == blocked.Blocked.name:
                timer = functools.partial(self._timed, layout=name)
                layouts[f"{name}_timed"] = blocked.Blocked(kernel_timer=timer)
        return layouts

    def _timed(
        self, spec: ConvSpec, weight: np.ndarray, names: list[str], layout: str = "NCHW"
    ) -> dict[str, float]:
        """Times of ``names`` on this conv: NCHW kernels, or ``blocked``'s on its layout."""
        target = tvm.target.Target.current()
        _require_host(target)
        key = {
            "version": CHOICES_VERSION,
            "conv": dataclasses.asdict(spec),
            "layout": layout,
            "target": str(target),
            "candidates": names,
            "repeat": self.repeat,
            "rounds": self.rounds,
            # Sparse kernels' speed depends on how many weights are zero.
            "sparsity": round(sparsity(weight), 2),
        }
        path = self.cache.entry("algorithm_choices", key, ".json") if self.cache else None
        if path is not None and path.exists():
            return json.loads(path.read_text())["times_ms"]
        timer = time_convs if layout == "NCHW" else time_blocked_convs
        times = timer(spec, weight, names, target, self.repeat, self.rounds)
        log.info("algorithm=auto %s %s: %s", layout, spec.row()["weight_shape"], times)
        if path is not None:
            write_atomic(path, json.dumps({"spec": key, "times_ms": times}, indent=1).encode())
        return times


def _same_kernels(a: LoweredModule, b: LoweredModule) -> bool:
    """Whether two lowerings run the same algorithm and kernel on every layer."""
    kernels = [[(r.get("algorithm"), r.get("compute")) for r in x.layers] for x in (a, b)]
    return kernels[0] == kernels[1]


def _require_host(target: tvm.target.Target | None) -> None:
    if target is None or target.kind.name != "llvm" or "mtriple" in target.attrs:
        raise ValueError(
            "algorithm=auto times its candidates on this machine and needs this host's CPU "
            f"as the target (got {target}); map layers with algorithm=per_layer instead"
        )
