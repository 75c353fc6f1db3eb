"""Quantization numerics: weight ternarization/k-bit, activation fake-quant, STE.

Pure numerics (functions of tensors) plus three parameter-light cells that attach the
straight-through gradient. ``quantize_weight`` is THE weight quantizer: training,
evaluation, packing (src/packing.py) and export all call it, so a packed model holds
exactly the values the network was evaluated with.

Every weight quantizer returns ``(scale, codes)`` with ``q(w) = scale * codes``:
  * ternary: codes in {-1, 0, +1}, scale = alpha (per matrix, or per row);
  * k-bit:   codes integers in [-(2^(k-1)-1), 2^(k-1)-1], scale = max|w| / (2^(k-1)-1).
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from .config import QuantConfig

_RINT = ops.Rint()


def round_half_even(x):
    """Round to the nearest integer, ties to even: what ``ops.round`` computes, but ``Rint``'s CPU
    kernel is ~10x faster (0.05 vs 0.45 ms on a [1, 128, 1536] activation, measured 2026-11-29);
    every quantizer rounds with it."""
    return _RINT(x)


def _clamp(x, lo, hi):
    # two elementwise kernels: faster than ops.clamp's on CPU (0.20 vs 0.27-0.95 ms, same tensor)
    return ops.minimum(ops.maximum(x, lo), hi)


def global_max(x):
    """max over all of x. Reducing rows first then the row maxima is ~4x faster on CPU than
    one full reduction (measured: 10 ms vs 46 ms for 6.3M floats), with the same result."""
    return x.reshape(-1, x.shape[-1]).max(axis=-1).max()


def global_min(x):
    return x.reshape(-1, x.shape[-1]).min(axis=-1).min()


def _reduce_axes(granularity: str):
    """``row``: statistics per row (last axis); ``layer``: one statistic for the tensor."""
    return -1 if granularity == "row" else None


def _rsum(x, granularity):
    axis = _reduce_axes(granularity)
    if axis is None:
        return x.sum(axis=-1).sum()  # two-stage: faster than one full reduction (see global_max)
    return x.sum(axis=axis, keepdims=True)


def twn_ternarize(w, granularity: str):
    """TWN: delta = 0.7 mean|w|, codes = sign(w)[|w| > delta], alpha = mean|w| over codes != 0.

    w: [rows, cols] (already clipped). Returns alpha ([rows, 1] for row, [] for layer) and
    codes (like w).
    """
    absw = ops.abs(w)
    axis = _reduce_axes(granularity)
    n = w.shape[-1] if axis is not None else w.size
    delta = 0.7 * _rsum(absw, granularity) / n
    keep = ops.cast(absw > delta, w.dtype)
    # An all-zero row keeps nothing: guard the division, alpha is then 0 (q = 0, exact).
    alpha = _rsum(absw * keep, granularity) / ops.maximum(_rsum(keep, granularity), 1.0)
    codes = ops.sign(w) * keep
    return alpha, codes


def lat_ternarize(w, d, granularity: str, iters: int):
    """Loss-aware ternarization (Hou & Kwok 2018), as used by the paper.

    d = sqrt(v) + eps is the diagonal of Adam's second-moment estimate for w (same shape).
    Alternates alpha = sum|codes * d * w| / sum|codes * d| and codes = round(clip(w/alpha,-1,1))
    starting from the TWN solution.
    """
    alpha, codes = twn_ternarize(w, granularity)
    # A loop on a tensor counter, not a Python loop: in GRAPH_MODE a Python loop is unrolled, and
    # MindSpore's CPU executor then keeps every iteration's weight-sized temporaries until the
    # graph ends (10 iterations x 12 MiniLM FFN-sized matrices: 2.0 GB peak for a forward and
    # backward, 0.7 GB with this loop; same values, same speed; measured 2026-11-29).
    i = ms.Tensor(0, ms.int32)
    while i < iters:
        i = i + 1
        num = _rsum(ops.abs(codes * d * w), granularity)
        den = _rsum(ops.abs(codes * d), granularity)
        # A row that lost all its codes keeps its previous alpha.
        alpha = ops.select(den > 0, num / ops.maximum(den, 1e-30), alpha)
        codes = round_half_even(ops.clip_by_value(w / ops.maximum(alpha, 1e-30), -1.0, 1.0))
    return alpha, codes


def kbit_quantize(w, bits: int, granularity: str):
    """Symmetric k-bit: s = (2^(k-1)-1)/max|w|, codes = round(w s), q = codes / s."""
    levels = float(2 ** (bits - 1) - 1)
    axis = _reduce_axes(granularity)
    if axis is None:
        m = global_max(ops.abs(w))
    else:
        m = ops.abs(w).max(axis=axis, keepdims=True)
    m = ops.maximum(m, 1e-30)
    codes = round_half_even(w * (levels / m))
    return m / levels, codes


def quantize_weight(w, bits: int, qcfg: QuantConfig, granularity: str, d=None):
    """THE weight quantizer: clip to [-c, c], then ternarize (bits=2) or k-bit.

    w: [rows, cols]; d: LAT curvature (like w) or None. Returns (scale, codes).
    """
    c = qcfg.weight_clip
    wc = ops.clip_by_value(w, -c, c)
    if bits == 2:
        if qcfg.ternarizer == "lat":
            return lat_ternarize(wc, d, granularity, qcfg.lat_iters)
        return twn_ternarize(wc, granularity)
    return kbit_quantize(wc, bits, granularity)


class WeightQuantSTE(nn.Cell):
    """q(w) forward; backward passes dL/dq to w, masked to |w| <= c when configured.

    A parameter-free cell with a custom bprop: the forward value is exactly
    ``scale * codes`` (no ``w + stop_gradient(q - w)`` rounding), which keeps training,
    evaluation, packed files and MINDIR numerically identical.
    """

    def __init__(self, bits: int, qcfg: QuantConfig, granularity: str):
        super().__init__()
        self.bits = bits
        self.qcfg = qcfg
        self.granularity = granularity
        self.clip = qcfg.weight_clip
        self.mask = qcfg.ste_mask

    def construct(self, w, d):
        scale, codes = quantize_weight(w, self.bits, self.qcfg, self.granularity, d)
        return scale * codes

    def bprop(self, w, d, out, dout):
        if self.mask:
            dout = dout * ops.cast(ops.abs(w) <= self.clip, dout.dtype)
        return dout, ops.zeros_like(d)


def fake_quant_symmetric(x, clip: float, bits: int = 8, bounded: bool = False):
    """Per-tensor symmetric fake-quant of the batch: clip to [-c, c], s = 127 / max|x|.

    bounded=True promises |x| <= clip already (softmax probabilities): the clip is skipped.
    """
    levels = float(2 ** (bits - 1) - 1)
    if bounded:
        m = global_max(x)  # x >= 0
        xc = x
    else:
        # max|clip(x)| = min(max|x|, c): one reduction, no clipped temporary needed for it
        m = ops.minimum(global_max(ops.abs(x)), clip)
        xc = _clamp(x, -clip, clip)
    m = ops.maximum(m, 1e-30)
    # scalar reciprocals, then multiplies: a broadcast Div over the tensor is ~2x a Mul on CPU
    return round_half_even(xc * (levels / m)) * (m / levels)


def fake_quant_asymmetric(x, lo, hi, bits: int = 8):
    """Min-max fake-quant on [lo, hi]: s = (hi - lo)/255, q = round((x - lo)/s) s + lo."""
    levels = float(2 ** bits - 1)
    r = ops.maximum(hi - lo, 1e-30)
    xc = _clamp(x, lo, hi)
    return round_half_even((xc - lo) * (levels / r)) * (r / levels) + lo


def fake_quant_fixed(x, clip, bits: int = 8):
    """Symmetric fake-quant on a fixed range [-clip, clip] (clip: a one-element tensor): s = clip / 127.

    Unlike ``fake_quant_symmetric`` the scale does not depend on the batch, so a quantized
    prediction does not depend on the padding or on the other sentences of its batch.
    """
    up, down = fixed_scales(clip, bits)
    xc = _clamp(x, -clip, clip)
    return round_half_even(xc * up) * down


def fixed_scales(clip, bits: int = 8):
    """(levels / clip, clip / levels) for a fixed range, as MindSpore's kernels compute them (its
    scalar division is not always float32's correctly rounded one: bake_range takes these values)."""
    levels = float(2 ** (bits - 1) - 1)
    return levels / clip, clip / levels


def fake_quant_constant(x, up: float, down: float, levels: float):
    """``fake_quant_fixed`` with the range baked in as constants (up = levels/clip, down =
    clip/levels, both float32 values): round(clamp(x * up, -levels, levels)) * down. Clamping
    after the scaling gives the same codes (|x| <= clip: the same product; beyond: levels, which
    clip * up rounds to as well) with one pass less and no scalar kernels per call."""
    return round_half_even(_clamp(x * up, -levels, levels)) * down


class _ActSTE(nn.Cell):
    """Fake-quant forward; gradient passes where lo <= x <= hi, zero outside.

    ``learned``: hi is the learned clip a (a Parameter); its gradient is LSQ's (Esser et al.
    2020) for s = a/127: dq/da = round(x/s) - x/s over 127 inside the range, sign(x) outside,
    summed against dout and scaled by 1/sqrt(numel * 127) so that it stays of the order of
    one weight's gradient (it enters the global-norm clipping with them).
    """

    def __init__(self, mode: str, bits: int, clip: float, bounded: bool):
        super().__init__()
        self.mode = mode
        self.bits = bits
        self.clip = clip
        self.bounded = bounded and mode == "symmetric"

    def construct(self, x, lo, hi):
        if self.mode == "symmetric":
            return fake_quant_symmetric(x, self.clip, self.bits, self.bounded)
        if self.mode == "learned":
            return fake_quant_fixed(x, hi, self.bits)
        return fake_quant_asymmetric(x, lo, hi, self.bits)

    def bprop(self, x, lo, hi, out, dout):
        if self.bounded:
            return dout, ops.zeros_like(lo), ops.zeros_like(hi)  # nothing is clipped
        if self.mode == "asymmetric_ema":
            inside = ops.logical_and(x >= lo, x <= hi)
        else:
            inside = ops.abs(x) <= hi
        inside = ops.cast(inside, dout.dtype)
        dx = dout * inside
        if self.mode != "learned":
            return dx, ops.zeros_like(lo), ops.zeros_like(hi)
        levels = float(2 ** (self.bits - 1) - 1)
        v = x * (levels / hi)  # x / s
        dq_da = inside * (round_half_even(v) - v) / levels + (1.0 - inside) * ops.sign(x)
        scale = 1.0 / (float(x.size) * levels) ** 0.5
        da = (dout * dq_da).reshape(-1, x.shape[-1]).sum(axis=-1).sum() * scale
        return dx, ops.zeros_like(lo), ops.reshape(da, hi.shape)


class ActQuant(nn.Cell):
    """8-bit activation fake-quant node.

    symmetric: per-batch max-abs after clipping to [-act_clip, act_clip] (stateless).
    asymmetric_ema: [lo, hi] tracked by an EMA of batch min/max while training (state saved in
    checkpoints as ``<node>.ema_lo`` / ``ema_hi``), initialised at +-act_clip, frozen in eval.
    learned: a fixed range [-a, a] with a trained by gradient (``<node>.clip``, initialised at
    act_clip; at min(act_clip, 1) for softmax probabilities).
    """

    def __init__(self, qcfg: QuantConfig, bounded: bool = False):
        super().__init__()
        self.mode = qcfg.act_mode
        self.decay = qcfg.act_ema_decay
        # bounded: inputs known to lie in [0, 1] <= act_clip (softmax probabilities)
        self.fq = _ActSTE(qcfg.act_mode, qcfg.act_bits, qcfg.act_clip, bounded and qcfg.act_clip >= 1)
        c = qcfg.act_clip
        self.baked = None  # (up, down): see bake_range
        if self.mode == "learned":
            self.lo = ms.Tensor(0.0, ms.float32)  # unused
            # shape (1,), not a scalar: the fused AdamWeightDecay of graph mode rejects 0-d parameters
            self.clip = ms.Parameter(ms.Tensor([min(c, 1.0) if bounded else c], ms.float32), name="clip")
        elif self.mode == "asymmetric_ema":
            self.ema_lo = ms.Parameter(ms.Tensor(-c, ms.float32), name="ema_lo", requires_grad=False)
            self.ema_hi = ms.Parameter(ms.Tensor(c, ms.float32), name="ema_hi", requires_grad=False)
        else:
            self.lo = ms.Tensor(-c, ms.float32)
            self.hi = ms.Tensor(c, ms.float32)

    def construct(self, x):
        if self.mode == "symmetric":
            return self.fq(x, self.lo, self.hi)
        if self.baked is not None:
            return fake_quant_constant(x, self.baked[0], self.baked[1], float(2 ** (self.fq.bits - 1) - 1))
        if self.mode == "learned":
            return self.fq(x, self.lo, self._learned_range())
        lo = self.ema_lo
        hi = self.ema_hi
        if self.training:
            xs = ops.stop_gradient(x)
            lo = self.decay * lo + (1.0 - self.decay) * global_min(xs)
            hi = self.decay * hi + (1.0 - self.decay) * global_max(xs)
            lo = ops.depend(lo, ops.assign(self.ema_lo, lo))
            hi = ops.depend(hi, ops.assign(self.ema_hi, hi))
        return self.fq(x, lo, hi)

    def _learned_range(self):
        # kept away from 0: the scale divides by it. A 0-d range: MindSpore's CPU kernels
        # broadcast a shape-(1,) operand over x ~10x slower than a scalar (measured on a
        # [1, 128, 1536] activation: 13.5 vs 1.3 ms per fake-quant)
        return ops.maximum(self.clip, 1e-3).reshape(())

    def bake_range(self):
        """Deployment only: fix this learned-range quantizer's current range in the graph as
        constants (the same values per call; no scalar kernels, one pass less: a calibrated
        MiniLM-L6 MINDIR ~10% faster at 1 x 128 and ~15% at 1 x 32, same logits;
        benchmarks/results/mindir_ab_cpu.json). The range no longer follows ``clip``: never in
        training (export_artifacts bakes the network it exports)."""
        if self.mode != "learned":
            raise ValueError(f"only fixed (learned or calibrated) ranges can be baked, not {self.mode!r}")
        up, down = fixed_scales(self._learned_range(), self.fq.bits)  # run once, eagerly
        self.baked = (float(up.asnumpy()), float(down.asnumpy()))


def make_act_quant(qcfg: QuantConfig, bounded: bool = False):
    """An ActQuant node, or None when activations stay float (then no op is inserted)."""
    return ActQuant(qcfg, bounded) if qcfg.act_bits < 32 else None
