"""float16 inference: the compiled model's weights and activations are float16."""

from __future__ import annotations

from typing import Any

from dlas.compression.base import Compression
from dlas.compression.registry import COMPRESSIONS
from dlas.config.schema import Fp16Config

# Ops whose inputs/outputs are counted in the report: the ones the algorithm layer lowers.
HEAVY_OPS = ("relax.nn.conv2d", "relax.matmul")


def to_fp16(mod: Any, accumulate: str = "float16") -> Any:
    """float32 module in, float16 compute inside, float32 inputs and logits at the boundary.

    BatchNorm is decomposed and folded first: ToMixedPrecision keeps ``batch_norm`` itself in
    float32, which would leave a float32 round trip after every conv. What still runs in
    float32 afterwards are the reductions (global average pooling), as in standard AMP."""
    import tvm
    from tvm import relax

    from dlas.algorithms.activations import ClipToMinMax

    seq = tvm.transform.Sequential(
        [
            ClipToMinMax(),  # ToMixedPrecision rejects clip's scalar bounds
            relax.transform.DecomposeOpsForInference(),
            relax.transform.FoldConstant(),
            relax.transform.ToMixedPrecision(out_dtype=accumulate),
            # Turns the astype(weight) casts into float16 constants: weights are stored in fp16.
            relax.transform.FoldConstant(),
        ]
    )
    return seq(mod)


def op_dtypes(mod: Any) -> dict[str, list]:
    """One row per conv2d/matmul: its input dtype and accumulator (output) dtype."""
    import tvm
    from tvm import relax

    rows: dict[str, list] = {
        "layer": [],
        "op": [],
        "input_dtype": [],
        "weight_dtype": [],
        "out_dtype": [],
    }

    def visit(expr: relax.Expr) -> None:
        if (
            isinstance(expr, relax.Call)
            and isinstance(expr.op, tvm.ir.Op)
            and expr.op.name in HEAVY_OPS
        ):
            rows["layer"].append(len(rows["layer"]))
            rows["op"].append(expr.op.name.removeprefix("relax."))
            rows["input_dtype"].append(str(expr.args[0].ty.dtype))
            rows["weight_dtype"].append(str(expr.args[1].ty.dtype))
            rows["out_dtype"].append(str(expr.ty.dtype))

    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return rows


@COMPRESSIONS.register("fp16")
class Fp16(Compression):
    acts_on_relax = True
    compute_dtypes = ("float16",)
    cfg: Fp16Config

    def apply_relax(self, mod: Any, calibration: list[Any]) -> Any:
        mod = to_fp16(mod, self.cfg.accumulate)
        table = op_dtypes(mod)
        fp16 = sum(d == "float16" for d in table["input_dtype"])
        self.report_relax(
            {
                "compression/fp16_layers": float(fp16),
                "compression/float32_layers": float(len(table["input_dtype"]) - fp16),
            },
            {"compression/fp16_layers.json": table},
        )
        return mod
