"""Pointwise panels: the schedule of 1x1 layers of many input channels on AVX-512
(:func:`schedule_pointwise_panel`), beside :func:`.schedules.schedule_channel_tile`'s tiles."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tvm import s_tir
from tvm.s_tir.schedule import LoopRV, SBlockRV

from .schedules import CHUNK_PLANE_BYTES, extent, finish_reduction, tile
from .shapes import (
    LANES,
    MAX_ACCUMULATORS,
    ROWS_FIRST_KEY,
    TILE_WEIGHTS_IN_L1,
    largest_divisor,
    max_accumulators,
    target_threads,
)

# A pointwise panel (schedule_pointwise_panel): a 1x1 layer of at least PANEL_MIN_CHANNELS
# inputs, reduced PANEL_CHUNK input channels per pass (their weights for 4 output vectors,
# 128 x 64 x 4 bytes, fill 32 KiB of L1), in tiles of 4 or 2 16-channel vectors x at least
# PANEL_MIN_TILE_PIXELS: with its weight vectors, 28 accumulators fill AVX-512's 32 registers.
PANEL_MIN_CHANNELS = 512
PANEL_CHUNK = 128
PANEL_ACCUMULATORS = 28
PANEL_MIN_TILE_PIXELS = 7
# The channel vectors of a panel's tiles, in the order they are tried, each with the fewest
# tiles a band of it holds: the tiles that read its weights from L1 once one of them brought
# them there.
PANEL_BAND_TILES = {4: 4, 2: 2}
# On rows of at least this many pixels, 2-vector panels also take the layers of fewer input
# channels whose 2-vector tiles schedule_channel_tile chunks (their weights over every input
# channel exceed TILE_WEIGHTS_IN_L1: 257 channels and up).
PANEL_WIDE_ROW = 28


def schedule_pointwise_panel(
    sch: s_tir.Schedule,
    block: SBlockRV,
    *,
    outer: Sequence[LoopRV],
    channels: LoopRV,
    y: LoopRV,
    x: LoopRV,
    lanes: LoopRV,
    reduction: LoopRV,
    inner: Sequence[LoopRV],
) -> bool:
    """A 1x1 conv of many input channels as ONNX Runtime's NCHWc pointwise kernel runs it: a
    task is a band of rows of 4 output vectors, whose partial sums (at most CHUNK_PLANE_BYTES)
    wait in L1 while it reduces PANEL_CHUNK input channels at a time over the whole band, the
    chunk's weights (the panel) read from L1 by every tile of it. Tiles of 4 vectors x 7
    pixels (PANEL_ACCUMULATORS). :func:`.schedules.schedule_channel_tile`'s chunked tiles reduce 16
    channels per pass over one row, their sums loaded and stored per pass: ResNet50-224's
    1x1 layers at 28, 14 and 7 px ran 1.09-1.26x faster alone, 1.09-1.22x in the model
    (blocked, Sapphire Rapids). Where 4 vectors leave a band of fewer than 4 tiles
    (PANEL_BAND_TILES: their panel serves too few tiles) or do not group the channel blocks
    (DenseNet161's 1056), tiles of 2 vectors: DenseNet161's 528-2064 -> 192 at 14 px, whose
    4-vector bands held 2 tiles, ran 1.04-1.21x faster in the model as 14-px tiles of 2
    vectors over bands of 7 rows; EfficientNet-B0's 1152 -> 192 at 7 px, a band of one tile
    with 4 vectors, 1.01x. On rows of PANEL_WIDE_ROW pixels or more, 2-vector panels also
    take the layers of 257-511 input channels, whose 2-vector tiles schedule_channel_tile
    chunks: DenseNet161's 288-480 -> 192 at 28 px 1.08-1.15x, 288-384 -> 192 at 56 px
    1.14-1.26x faster in the model. On narrower rows they were not faster: MobileNetV2-224's
    384 -> 64 at 14 px 0.95x, 320 -> 1280 at 7 px 0.98x in the model. DenseNet161-224 as a
    whole ran 1.06x (95%: 1.05-1.07) with these two rules; the other study models' kernels
    are unchanged.

    False, the schedule untouched, where the layer does not fit: not float32, fewer input
    channels, a target whose accumulator is not one of 32 registers (AVX-512's; the panel
    was measured there only), or no tile of PANEL_MIN_TILE_PIXELS with a band of
    PANEL_BAND_TILES (MobileNetV2-32's 960->320 at 4 px in 4-pixel tiles: 0.99x, 95%
    0.97-1.01)."""
    stmt = sch.get(block)
    h, w, blocks = extent(sch, y), extent(sch, x), extent(sch, channels)
    per_step = math.prod(extent(sch, lp) for lp in inner)  # input channels a step reduces
    if str(stmt.writes[0].source.dtype) != "float32" or max_accumulators() != MAX_ACCUMULATORS:
        return False
    plan = _panel_tile(h, w, blocks, extent(sch, reduction) * per_step)
    if plan is None:
        return False
    vectors, rows, cols, band_rows = plan
    ob_o, ob_i = tile(sch, channels, vectors)
    y_o, y_i = tile(sch, y, rows)
    x_o, x_i = tile(sch, x, cols)
    chunk = largest_divisor(extent(sch, reduction), max(1, PANEL_CHUNK // per_step))
    r_o, r_i = tile(sch, reduction, chunk)
    band, y_o = tile(sch, y_o, band_rows)
    rows_first = ROWS_FIRST_KEY in stmt.annotations
    first, second = (band, ob_o) if rows_first else (ob_o, band)
    sch.reorder(*outer, first, second, r_o, y_o, x_o, r_i, *inner, y_i, x_i, ob_i, lanes)
    finish_reduction(
        sch,
        block,
        parallel=[*outer, first, second],
        tile_loop=second,
        first_reduction=r_o,
        vector=lanes,
        unroll=[y_i, x_i, ob_i],
    )
    return True


def _panel_tile(h: int, w: int, blocks: int, channels: int) -> tuple[int, int, int, int] | None:
    """(vectors, rows, cols, band rows) of a panel over ``blocks`` channel blocks of an h x w
    map reducing ``channels``: the first vectors of PANEL_BAND_TILES that group the blocks into
    a tile of at least PANEL_MIN_TILE_PIXELS and a band of at least their tiles; None where
    none do."""
    for vectors, band_tiles in PANEL_BAND_TILES.items():
        if blocks % vectors or channels < _min_channels(vectors, w):
            continue
        budget = PANEL_ACCUMULATORS // vectors
        cols = largest_divisor(w, budget)
        rows = largest_divisor(h, max(1, budget // cols))
        if rows * cols < PANEL_MIN_TILE_PIXELS:
            continue
        band_rows = _band_rows(h // rows, blocks // vectors, rows * w, vectors)
        if band_rows * (w // cols) >= band_tiles:
            return vectors, rows, cols, band_rows
    return None


def _min_channels(vectors: int, width: int) -> int:
    """The fewest input channels a panel of ``vectors`` takes on rows of ``width`` pixels."""
    if vectors == 2 and width >= PANEL_WIDE_ROW:
        return TILE_WEIGHTS_IN_L1 // (vectors * LANES * 4) + 1
    return PANEL_MIN_CHANNELS


def _band_rows(tile_rows: int, channel_tiles: int, tile_row_pixels: int, vectors: int) -> int:
    """Rows of tiles per task: of the divisors of the rows whose partial sums fit
    CHUNK_PLANE_BYTES and leave every thread two tasks, the one that shares the tasks out
    most evenly (7 tasks on 2 threads leave one idle an eighth of the time), then the
    largest."""
    threads = target_threads()
    limit = max(1, CHUNK_PLANE_BYTES // (tile_row_pixels * vectors * LANES * 4))

    def tasks(d: int) -> int:
        return channel_tiles * tile_rows // d

    options = [d for d in range(1, min(limit, tile_rows) + 1) if tile_rows % d == 0]
    options = [d for d in options if tasks(d) >= 2 * threads] or [1]
    return min(options, key=lambda d: (-(-tasks(d) // threads) * threads / tasks(d), -d))
