"""Ternary ONNX export: the project writes the ONNX graph itself, from the ternary codes.

MindSpore's own ONNX export cannot express this network (dynamic shapes, Erf, the quantizers),
and a float ONNX of the fake-quant network would compute in fp32 anyway. Here every quantized
dense layer becomes an integer matrix product that ONNX Runtime runs with int8 GEMM kernels:

    u   = Clip(QuantizeLinear(x, s, zero_point 128), 1)   uint8 [.., in]   (8-bit activation)
    acc = MatMulInteger(u, C, 128, 0)                      int32 [.., out]  (C: int8 codes^T)
    y   = float(acc) * (s * alpha) + bias                  fp32  [.., out]

with ``(alpha, C)`` exactly the ``(scale, codes)`` of ``src.quant.quantize_weight`` (the function
training and evaluation use) and ``s`` computed by the same formula as the training fake-quant
(per-tensor max-abs, clipped; or the EMA / learned fixed range; the Clip keeps the codes at
-127..127, see ``_codes``). Activations are uint8 with zero point 128 because ONNX Runtime's
u8 x s8 GEMM is its fast path (an int8 x int8 product runs ~10x slower there); the integers are
the same. Q.K^T is an integer product too (Q's and K's uint8 codes: with int8 K codes, ONNX
Runtime's AVX2 kernels overflow, see _attention); the softmax probabilities and V before P.V are
fake-quantized (QuantizeLinear/DequantizeLinear pairs, which ONNX Runtime turns into an integer
product itself), as in training. Asymmetric (EMA) ranges keep Q and K as fake-quant pairs in float.
With fixed ranges (calibrated, learned), the Q/K/V quantizers' steps fold into the Q/K/V product's
scale and bias, and one QuantizeLinear quantizes the three (``_Writer.dense``, out_ranges).

By default the three lines of a layer are ONE ONNX Runtime operator, MatMulIntegerToFloat
(com.microsoft domain: the int32 sums scaled and biased as they leave the GEMM); ``ops="standard"``
writes them as above, with standard ONNX operators only, for other runtimes.

Ternary codes are stored at 1.6 bits each (base-3, five per byte, as in the .tbq file) with a
small decode subgraph (Gather from a 243 x 5 table) that ONNX Runtime constant-folds when it
loads the model, so the file is close to the .tbq size while inference uses plain int8 codes.
``pack_codes=False`` stores int8 codes instead (no decode step; 5x larger codes).

The model carries its RunConfig and a SHA-256 of its content in ``metadata_props``, so eval.py
and predict.py need nothing beside the file and refuse a corrupted one.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

OPSET = 17
IR_VERSION = 8  # opset 17's IR version: readable by every ONNX Runtime since 1.13
FORMAT = "ternarybert-onnx/1"
ZP = 128  # zero point of the uint8 activations (symmetric ranges)
MS_DOMAIN = "com.microsoft"  # ONNX Runtime's own operators
OPS = ("onnxruntime", "standard")
# erf GELU's minimum is -0.16997 (at x = -0.7518): a bound its outputs never go below
GELU_MIN = -0.17

RANGE_PREFIX = "range:"  # calibration: graph outputs holding the per-call range of a quantizer

_TERNARY_TABLE = ((np.arange(243)[:, None] // np.array([1, 3, 9, 27, 81])[None, :]) % 3 - 1).astype(np.int8)


class OnnxExportError(ValueError):
    """The network holds something this exporter cannot express."""


DEPLOY_EXTRA = "the deployment extra: bash scripts/setup.sh --deploy (or pip install -r requirements-deploy.txt)"


def import_onnx():
    try:
        import onnx
    except ImportError:
        raise RuntimeError(f"writing ONNX needs the onnx package, part of {DEPLOY_EXTRA}") from None
    return onnx


@dataclass
class _QAct:
    """An 8-bit activation: uint8 tensor ``u`` with value (u - zp) * s + lo."""
    u: str
    zp: int
    s: str          # name of a float scalar tensor
    lo: float = 0.0  # asymmetric ranges: the value of code 0 (u is zero-point 0)


class _Graph:
    """A thin writer over onnx.helper: unique names, initializers, one-output nodes.

    act_names: {id(ActQuant cell): its name in the network}; act_ranges: {name: fixed range m} for
    the symmetric quantizers (calibrated), or None (per-call ranges). range_tensors collects, per
    quantizer name, the tensor holding its per-call range m (what calibration reads)."""

    def __init__(self, act_names: Optional[Dict[int, str]] = None,
                 act_ranges: Optional[Dict[str, float]] = None):
        onnx = import_onnx()
        from onnx import helper, numpy_helper
        self.onnx, self.helper, self.numpy_helper = onnx, helper, numpy_helper
        self.nodes, self.inits, self.value_info, self._n = [], [], [], 0
        self._consts: Dict[Tuple, str] = {}
        self.act_names = act_names or {}
        self.act_ranges = act_ranges
        self.range_tensors: Dict[str, str] = {}

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def init(self, hint: str, arr: np.ndarray) -> str:
        name = self.name(hint)
        self.inits.append(self.numpy_helper.from_array(np.require(arr, requirements="C"), name))  # 0-d stays 0-d
        return name

    def const(self, value, dtype=np.float32) -> str:
        """A small shared constant (scalars, shapes)."""
        arr = np.asarray(value, dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init("c", arr)
        return self._consts[key]

    def op(self, op_type: str, inputs, n_out: int = 1, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs, name=self.name(op_type),
                                                **attrs))
        return outs[0] if n_out == 1 else outs


# ------------------------------------------------------------------------------------------
# Weights
# ------------------------------------------------------------------------------------------
def _int8_codes(g: _Graph, hint: str, codes: np.ndarray, bits: int, pack: bool) -> str:
    """Codes (any shape) as an int8 tensor of the graph; ternary ones packed 5 per byte."""
    codes = np.asarray(codes)
    if bits != 2 or not pack:
        return g.init(hint, codes.astype(np.int8))
    from .packing import pack_ternary
    packed = np.frombuffer(pack_ternary(codes), np.uint8)
    digits = g.op("Gather", [g.init("ternary_table", _TERNARY_TABLE),
                             g.op("Cast", [g.init(hint + "_base3", packed)], to=g.onnx.TensorProto.INT32)],
                  axis=0)  # [bytes, 5]
    flat = g.op("Reshape", [digits, g.const([-1], np.int64)])
    flat = g.op("Slice", [flat, g.const([0], np.int64), g.const([codes.size], np.int64)])
    return g.op("Reshape", [flat, g.const(codes.shape, np.int64)])


def _packed_rows(g: _Graph, hint: str, codes: np.ndarray, ids: str) -> str:
    """Look up rows of a ternary table that stays packed in memory: each row base-3 packed on its
    own (padded to a multiple of 5 codes), the looked-up rows decoded per call. The word embedding
    is most of the model's codes: kept packed, it costs 1.6 bits per code in memory too, and
    nothing large is expanded when the model loads.

    codes [V, H] -> int8 [B, S, H] for ids [B, S]."""
    from .packing import pack_ternary
    v, h = codes.shape
    per_row = -(-h // 5)  # bytes per row
    padded = np.zeros((v, per_row * 5), np.int8)
    padded[:, :h] = codes
    table = np.frombuffer(pack_ternary(padded), np.uint8).reshape(v, per_row)
    rows = g.op("Gather", [g.init(hint + "_base3_rows", table), ids], axis=0)  # [B, S, per_row] uint8
    digits = g.op("Gather", [g.init("ternary_table", _TERNARY_TABLE),
                             g.op("Cast", [rows], to=g.onnx.TensorProto.INT32)], axis=0)  # [B, S, per_row, 5]
    flat = g.op("Reshape", [digits, g.const([0, 0, per_row * 5], np.int64)])
    return g.op("Slice", [flat, g.const([0], np.int64), g.const([h], np.int64), g.const([2], np.int64)])


def _float_weight(g: _Graph, hint: str, w: np.ndarray, q) -> str:
    """Weight as fp32: the float array, or scale * codes (decoded and folded at load)."""
    if q is None:
        return g.init(hint, w.astype(np.float32))
    bits, scale, codes, pack = q
    c = g.op("Cast", [_int8_codes(g, hint, codes, bits, pack)], to=g.onnx.TensorProto.FLOAT)
    return g.op("Mul", [c, g.init(hint + "_scale", np.asarray(scale, np.float32))])


# ------------------------------------------------------------------------------------------
# Activation quantizers (one per ActQuant node of the network)
# ------------------------------------------------------------------------------------------
def _codes(g: _Graph, x: str, s: str, no_low_clip: bool) -> _QAct:
    """The codes of the symmetric formula clamp(round(x / s), -127, 127): uint8 with zero point 128."""
    u8 = np.uint8
    u = g.op("QuantizeLinear", [x, s, g.const(ZP, u8)])  # codes -128..127
    if not no_low_clip:
        u = g.op("Clip", [u, g.const(ZP - 127, u8), g.const(ZP + 127, u8)])
    return _QAct(u, ZP, s)


def _act_quant(g: _Graph, x: str, aq, lower: Optional[float] = None) -> _QAct:
    """The 8-bit codes of ``x`` for an ActQuant node, by the same formula as training.

    Training computes round(clip(x, -c, c) / s) with s = c / 127: codes -127..127. Rounding is
    monotone and +-127 are integers, so that equals clamp(round(x / s), -127, 127): QuantizeLinear
    (uint8, zero point 128) saturates at code 127 by itself, and only its extra code -128 (x below
    -c * 127.5 / 127) has to be clipped, on the uint8 codes (a quarter of the float input's bytes).
    A float Clip before QuantizeLinear also stopped ONNX Runtime from fusing the integer P.V product
    with the quantizer after it; measured on MiniLM-L6 at 1 x 128 (learned ranges): Clip kernel
    time 0.84 -> 0.54 ms per call, the same logits bit for bit.

    lower: a bound x never goes below (GELU outputs, probabilities), or None. Where the range's
    lower end -c is at most that bound, no code below -127 can occur and the Clip is left out.

    Symmetric quantizers with a calibrated range (``g.act_ranges``): the same formula with m fixed,
    so values beyond m saturate at code +-127 as values beyond c do per call."""
    from .quant import ActQuant
    assert isinstance(aq, ActQuant)
    fq = aq.fq
    levels = float(2 ** (fq.bits - 1) - 1)
    u8 = np.uint8
    if fq.bits != 8:
        raise OnnxExportError(f"{fq.bits}-bit activations cannot be exported (8 only)")
    m = _fixed_range(g, aq)
    if m is not None:
        return _codes(g, x, g.const(_fixed_scale(m)), fq.bounded or (lower is not None and lower >= -m))
    if aq.mode == "symmetric":
        if fq.bounded:  # softmax probabilities, in [0, 1]: no clip
            m = g.op("ReduceMax", [x], keepdims=0)
        else:
            # max|clip(x)| = min(max|x|, c), as in training
            m = g.op("Min", [g.op("ReduceMax", [g.op("Abs", [x])], keepdims=0), g.const(fq.clip)])
        # No guard against m = 0 (training keeps m >= 1e-30): then x is all zeros and s = 0, and every
        # consumer multiplies the codes by s (DequantizeLinear, MatMulIntegerToFloat): 0, as in training.
        if id(aq) in g.act_names:
            g.range_tensors[g.act_names[id(aq)]] = m
        s = g.op("Div", [m, g.const(levels)])
        return _codes(g, x, s, fq.bounded or (lower is not None and lower >= -fq.clip))
    if aq.mode == "asymmetric_ema":
        # q = round((clip(x, lo, hi) - lo) / s) s + lo, s = (hi - lo) / 255: codes 0..255, zero point 0
        lo = np.float32(aq.ema_lo.asnumpy())
        hi = np.float32(aq.ema_hi.asnumpy())
        r = np.maximum(hi - lo, np.float32(1e-30))
        s = g.const(r / np.float32(2 ** fq.bits - 1))
        return _QAct(g.op("QuantizeLinear", [g.op("Sub", [x, g.const(lo)]), s, g.const(0, u8)]), 0, s,
                     float(lo))
    raise OnnxExportError(f"activation mode {aq.mode!r} cannot be exported")


def _fixed_range(g: _Graph, aq) -> Optional[np.float32]:
    """The fixed range m of a symmetric 8-bit quantizer (calibrated, or the learned clip), or None
    where the range is computed per call (symmetric, uncalibrated) or is asymmetric."""
    if aq is None or aq.fq.bits != 8:
        return None
    if aq.mode == "symmetric" and g.act_ranges is not None:
        name = g.act_names[id(aq)]
        if name not in g.act_ranges:
            raise OnnxExportError(f"no calibrated range for the activation quantizer {name}")
        return np.float32(max(float(g.act_ranges[name]), 1e-30))  # training keeps m >= 1e-30 too
    if aq.mode == "learned":
        return np.maximum(np.float32(aq.clip.asnumpy().reshape(())), np.float32(1e-3))  # as training
    return None


def _fixed_scale(m: np.float32) -> np.float32:
    """The code step of a fixed symmetric 8-bit range m: s = m / 127, in float32 as training."""
    return np.float32(m) / np.float32(127.0)


def _symmetric(aq) -> bool:
    """An 8-bit quantizer whose codes are symmetric (zero at code 0): every mode but asymmetric_ema."""
    return aq is not None and aq.mode != "asymmetric_ema"


def _dequant(g: _Graph, qa: _QAct) -> str:
    """The fake-quantized float value of an 8-bit activation."""
    x = g.op("DequantizeLinear", [qa.u, qa.s, g.const(qa.zp, np.uint8)])
    return g.op("Add", [x, g.const(qa.lo)]) if qa.lo else x


def _fake_quant(g: _Graph, x: str, aq, lower: Optional[float] = None) -> str:
    return x if aq is None else _dequant(g, _act_quant(g, x, aq, lower))


# ------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------
class _Writer:
    def __init__(self, g: _Graph, params: Dict[str, np.ndarray], codes: Dict[str, tuple], pack: bool,
                 ops: str = "onnxruntime"):
        self.g, self.params, self.codes, self.pack, self.ops = g, params, codes, pack, ops

    def q(self, name: str):
        """(bits, scale, codes, pack) of a quantized weight, or None for a float one."""
        if name not in self.codes:
            return None
        bits, scale, codes = self.codes[name]
        return bits, scale, codes, self.pack

    def dense(self, prefixes, x, aq, lower: Optional[float] = None, lead=("batch", "seq"), out_ranges=None,
              split: bool = True):
        """QuantDense layers reading the same input x ([.., in]; a float tensor name, quantized
        here by ``aq`` (``lower``: see _act_quant), or a _QAct). Several layers (Q, K, V) run as
        ONE matrix product over their concatenated weights, split afterwards: one GEMM of N = 3H
        is faster than three of H. lead: the symbolic leading dims of x. Returns one output name
        per prefix ([.., out]).

        out_ranges: the fixed ranges m of the symmetric 8-bit quantizers that the outputs go to
        (one per prefix), or None. Then the outputs come back as their codes (_QAct, uint8 with
        zero point 128), and in the integer product each quantizer's 1 / s (s = m / 127) joins
        its columns' scale and bias: y / s leaves the GEMM, and ONE QuantizeLinear (scale 1) and
        Clip quantize all outputs together, instead of one pair per output. split=False (with
        out_ranges, integer weights): the codes stay joined, returned as (uint8 [.., sum(out)], the
        outputs' steps s)."""
        g = self.g
        ws = [self.params[p + ".weight"] for p in prefixes]  # [out, in] each
        outs = [w_.shape[0] for w_ in ws]
        bias = np.concatenate([self.params[p + ".bias"] for p in prefixes]).astype(np.float32)
        steps = None if out_ranges is None else [_fixed_scale(m) for m in out_ranges]
        qs = [self.q(p + ".weight") for p in prefixes]
        hint = "+".join(prefixes)
        if aq is not None and not isinstance(x, _QAct):
            x = _act_quant(g, x, aq, lower)
        if isinstance(x, _QAct) and all(q is not None for q in qs):
            bits = qs[0][0]
            ct = np.concatenate([np.asarray(q[2]).T for q in qs], axis=1)  # [in, sum(out)]
            # Transformer weights: one scale per matrix; per output column once concatenated
            alphas = [np.asarray(q[1], np.float32).reshape(()) for q in qs]
            alpha = alphas[0] if len(qs) == 1 else np.concatenate(
                [np.full(n, a_, np.float32) for n, a_ in zip(outs, alphas)])
            if bits == 2:
                b, b_zp = _int8_codes(g, hint, ct, bits, self.pack), g.const(0, np.int8)
            else:
                # 8-bit codes as uint8 (zero point 128): a u8 x s8 product of AVX2 kernels sums pairs
                # in saturating int16 (255 * 127 * 2 overflows), u8 x u8 does not. Ternary codes
                # cannot overflow there (255 * 1 * 2).
                b, b_zp = g.init(hint, (ct.astype(np.int16) + ZP).astype(np.uint8)), g.const(ZP, np.uint8)
            if x.lo:
                # value = u s + lo: the lo part is a constant per output, folded into the bias
                bias = bias + np.float32(x.lo) * (alpha * ct.astype(np.float32).sum(axis=0))
            if steps is not None:
                # y / s_out per column: the quantizers' steps fold into the scale and the bias
                step = np.concatenate([np.full(n, s_, np.float32) for n, s_ in zip(outs, steps)])  # [sum(out)]
                alpha = (np.broadcast_to(np.asarray(alpha, np.float32), step.shape) / step).astype(np.float32)
                bias = (bias / step).astype(np.float32)
            bias_name = g.init(hint + ".bias", bias.astype(np.float32))
            a_zp = g.const(x.zp, np.uint8)
            if self.ops == "onnxruntime":
                # ONNX Runtime's fused kernel: the int32 product scaled and biased as it leaves the
                # GEMM, no int32 / float temporaries (it fuses the standard form below only when the
                # scale is computed in the graph, not for the fixed ranges of learned / EMA modes)
                y = g.op("MatMulIntegerToFloat", [x.u, b, x.s, g.const(alpha), a_zp, b_zp, bias_name],
                         domain=MS_DOMAIN)
                # ONNX's shape inference does not know this operator: its output shape, stated,
                # keeps the shapes downstream known (ONNX Runtime fuses Add + LayerNormalization
                # into SkipLayerNormalization only where they are)
                g.value_info.append(g.helper.make_tensor_value_info(
                    y, g.onnx.TensorProto.FLOAT, [*lead, int(ct.shape[1])]))
            else:
                acc = g.op("MatMulInteger", [x.u, b, a_zp, b_zp])  # int32 [.., sum(out)]
                scale = g.op("Mul", [x.s, g.const(alpha)])
                y = g.op("Add", [g.op("Mul", [g.op("Cast", [acc], to=g.onnx.TensorProto.FLOAT), scale]), bias_name])
            if steps is not None:
                codes = _codes(g, y, g.const(1.0), no_low_clip=False)  # uint8 [.., sum(out)]
                if not split:
                    return codes.u, steps
                return [_QAct(u, ZP, g.const(s_)) for u, s_ in zip(self._split(codes.u, outs), steps)]
            return self._split(y, outs)
        xf = _dequant(g, x) if isinstance(x, _QAct) else x
        if all(q is None for q in qs):
            # one initializer, not a Concat of three: tools that rewrite constant weights
            # (onnxruntime's quantize_dynamic) see the fused Q/K/V matrix as a weight
            wt = g.init(hint, np.concatenate([w_.T for w_ in ws], axis=1).astype(np.float32))  # [in, sum(out)]
        else:
            wts = [_float_weight(g, p, w_.T, None) if q is None else
                   _float_weight(g, p, None, (q[0], q[1], np.asarray(q[2]).T, q[3]))
                   for p, w_, q in zip(prefixes, ws, qs)]
            wt = wts[0] if len(wts) == 1 else g.op("Concat", wts, axis=1)  # [in, sum(out)]
        y = g.op("MatMul", [xf, wt])
        ys = self._split(g.op("Add", [y, g.init(hint + ".bias", bias.astype(np.float32))]), outs)
        if steps is not None:  # float weights: each output quantized on its own
            return [_codes(g, y_, g.const(s_), no_low_clip=False) for y_, s_ in zip(ys, steps)]
        return ys

    def _split(self, y: str, outs) -> list:
        """[.., sum(outs)] -> one tensor per layer."""
        if len(outs) == 1:
            return [y]
        return self.g.op("Split", [y, self.g.const(outs, np.int64)], n_out=len(outs), axis=-1)

    def layer_norm(self, prefix: str, x: str, eps: float) -> str:
        g = self.g
        return g.op("LayerNormalization", [x, g.init(prefix + ".weight", self.params[prefix + ".weight"]),
                                           g.init(prefix + ".bias", self.params[prefix + ".bias"])],
                    axis=-1, epsilon=float(eps))

    def word_embedding(self, name: str, ids: str) -> str:
        g = self.g
        q = self.q(name)
        if q is None:
            return g.op("Gather", [g.init(name, self.params[name]), ids], axis=0)
        bits, scale, codes, pack = q
        if bits == 2 and pack:
            rows = _packed_rows(g, name, np.asarray(codes), ids)  # [B, S, H] int8
        else:
            rows = g.op("Gather", [_int8_codes(g, name, codes, bits, pack), ids], axis=0)  # [B, S, H] int8
        rows = g.op("Cast", [rows], to=g.onnx.TensorProto.FLOAT)
        scale = np.asarray(scale, np.float32)
        if scale.size == 1:  # layer-wise: one scale
            return g.op("Mul", [rows, g.const(scale.reshape(()))])
        # row-wise: the scales of the looked-up rows, [V, 1] -> [B, S, 1]
        return g.op("Mul", [rows, g.op("Gather", [g.init(name + "_scale", scale.reshape(-1, 1)), ids], axis=0)])


def _gelu(g: _Graph, x: str) -> str:
    # erf GELU in the form ONNX Runtime fuses into one Gelu kernel: (x * 0.5) * (1 + erf(x / sqrt 2))
    e = g.op("Erf", [g.op("Div", [x, g.const(1.4142135623730951)])])
    return g.op("Mul", [g.op("Mul", [x, g.const(0.5)]), g.op("Add", [e, g.const(1.0)])])


def _attention(w: _Writer, prefix: str, cell, x: str, mask_add: str, cfg) -> str:
    """BertSelfAttention: x [B, S, H] -> context [B, S, H]."""
    g = w.g
    nh, hd = cfg.num_attention_heads, cfg.head_dim
    # Q, K, V read one quantized input (as in training: one fake-quant node for the three)
    xq = _act_quant(g, x, cell.in_quant) if cell.in_quant is not None else x
    qkv = [prefix + ".query", prefix + ".key", prefix + ".value"]
    # Per-tensor statistics do not depend on the layout: quantizing before the head split is the same.
    ranges = [_fixed_range(g, aq) for aq in (cell.q_quant, cell.k_quant, cell.v_quant)]
    fixed = all(m is not None for m in ranges)
    if fixed and isinstance(xq, _QAct) and all(w.q(p + ".weight") is not None for p in qkv):
        # fixed ranges: Q, K and V leave their product as codes, quantized by one QuantizeLinear +
        # Clip (uint8 [B, S, 3H]) instead of three pairs; measured on MiniLM-L6 (Zen 4, calibrated
        # and learned ranges, the same logits): 0.6-8% faster, in three interleaved runs. One head
        # split for the three, then: [B, S, 3 nh, hd] -> [B, 3 nh, S, hd] -> Q, K, V [B, nh, S, hd]
        # (one Reshape and Transpose where there were three: 18 nodes fewer on MiniLM-L6, same logits,
        # -1% to +2.5% in two interleaved runs on Zen 4: within noise)
        codes, steps = w.dense(qkv, xq, None, out_ranges=ranges, split=False)
        per_head = g.op("Transpose", [g.op("Reshape", [codes, g.const([0, 0, 3 * nh, hd], np.int64)])],
                        perm=[0, 2, 1, 3])
        qu, ku, vu = g.op("Split", [per_head, g.const([nh] * 3, np.int64)], n_out=3, axis=1)
        qa, ka = _QAct(qu, ZP, g.const(steps[0])), _QAct(ku, ZP, g.const(steps[1]))
        ku = g.op("Transpose", [ku], perm=[0, 1, 3, 2])  # [B, nh, hd, S] uint8
        v = _dequant(g, _QAct(vu, ZP, g.const(steps[2])))  # [B, nh, S, hd]
    else:
        heads = g.const([0, 0, nh, hd], np.int64)  # [B, S, H] -> [B, S, nh, hd]
        if fixed:  # float weights: each output quantized on its own
            qa, ka, va = w.dense(qkv, xq, None, out_ranges=ranges)
            v = _dequant(g, va)
        else:
            q, k, v = w.dense(qkv, xq, None)  # [B, S, H]
            v = _fake_quant(g, v, cell.v_quant)
            if _symmetric(cell.q_quant) and _symmetric(cell.k_quant):
                qa, ka = _act_quant(g, q, cell.q_quant), _act_quant(g, k, cell.k_quant)
        v = g.op("Transpose", [g.op("Reshape", [v, heads])], perm=[0, 2, 1, 3])  # [B, nh, S, hd]
        if _symmetric(cell.q_quant) and _symmetric(cell.k_quant):
            qu = g.op("Transpose", [g.op("Reshape", [qa.u, heads])], perm=[0, 2, 1, 3])  # [B, nh, S, hd] uint8
            ku = g.op("Transpose", [g.op("Reshape", [ka.u, heads])], perm=[0, 2, 3, 1])  # [B, nh, hd, S] uint8
    if _symmetric(cell.q_quant) and _symmetric(cell.k_quant):
        # Q.K^T as an integer product of Q's and K's codes; 1/sqrt(hd) joins K's scale. Measured on
        # MiniLM-L6 (Zen 5, calibrated ranges): 6% faster at 8 x 128 than dequantizing both and
        # multiplying floats. Both sides uint8 (zero point 128): with K as int8, ONNX Runtime's AVX2
        # kernels (CPUs without VNNI) sum u8 x s8 pairs in saturating int16, which codes up to
        # 255 x 127 x 2 overflow: wrong scores there (tested under valgrind, whose CPU is AVX2).
        k_scale = g.op("Mul", [ka.s, g.const(cell.inv_sqrt_hd)])
        zps = [g.const(qa.zp, np.uint8), g.const(ka.zp, np.uint8)]
        if w.ops == "onnxruntime":
            prod = g.op("MatMulIntegerToFloat", [qu, ku, qa.s, k_scale, *zps], domain=MS_DOMAIN)
            g.value_info.append(g.helper.make_tensor_value_info(
                prod, g.onnx.TensorProto.FLOAT, ["batch", nh, "seq", "seq"]))
        else:
            acc = g.op("MatMulInteger", [qu, ku, *zps])  # int32 [B, nh, S, S]
            prod = g.op("Mul", [g.op("Cast", [acc], to=g.onnx.TensorProto.FLOAT), g.op("Mul", [qa.s, k_scale])])
    else:
        q, k = (_fake_quant(g, t, aq) for t, aq in ((q, cell.q_quant), (k, cell.k_quant)))
        q = g.op("Transpose", [g.op("Reshape", [q, heads])], perm=[0, 2, 1, 3])  # [B, nh, S, hd]
        k = g.op("Transpose", [g.op("Reshape", [k, heads])], perm=[0, 2, 3, 1])  # [B, nh, hd, S]
        prod = g.op("MatMul", [g.op("Mul", [q, g.const(cell.inv_sqrt_hd)]), k])
    scores = g.op("Add", [prod, mask_add])  # [B, nh, S, S]
    probs = _fake_quant(g, g.op("Softmax", [scores], axis=-1), cell.p_quant, lower=0.0)  # [B, nh, S, S]
    ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])  # [B, S, nh, hd]
    return g.op("Reshape", [ctx, g.const([0, 0, cfg.hidden_size], np.int64)])


def build_model(net, run, codes: Dict[str, tuple], pack_codes: bool = True, ops: str = "onnxruntime",
                act_ranges: Optional[Dict[str, float]] = None, range_outputs: bool = False):
    """The ONNX ModelProto of ``net`` (a BertForSequenceClassification in eval mode).

    codes: {weight name: (bits, scale, codes)} of every quantized weight (``quantized_tensors``).
    ops: "onnxruntime" writes the integer layers as ONNX Runtime's MatMulIntegerToFloat (its
    com.microsoft domain); "standard" only standard ONNX operators (MatMulInteger, Cast, Mul, Add),
    for other runtimes: the same values, slower in ONNX Runtime when activation ranges are fixed.
    act_ranges: fixed ranges of the symmetric activation quantizers ({name in the network: m},
    from ``calibrate``), or None: ranges computed per call as in training.
    range_outputs: the per-call range of every symmetric quantizer becomes a graph output too
    (named ``range:<quantizer>``; calibration reads them).
    Inputs input_ids, input_mask, segment_ids: int32 [batch, seq] (both dynamic); output logits
    float32 [batch, num_labels].
    """
    from onnx import TensorProto
    from .checkpoint import named_params
    from .quant import ActQuant
    act_names = {id(c): n for n, c in net.cells_and_names() if isinstance(c, ActQuant)}
    g = _Graph(act_names, act_ranges)
    cfg = run.model
    params = {n: p.asnumpy() for n, p in named_params(net).items()}
    if ops not in OPS:
        raise OnnxExportError(f"ops must be one of {', '.join(OPS)}, got {ops!r}")
    w = _Writer(g, params, codes, pack_codes, ops)
    bert = net.bert
    inputs = [g.helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", "seq"])
              for n in ("input_ids", "input_mask", "segment_ids")]

    # embeddings: word + position[:S] + token type, LayerNorm       -> [B, S, H]
    we = w.word_embedding("bert.embeddings.word_embeddings.weight", "input_ids")
    seq = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const([1], np.int64)], axis=0)  # [1]
    pos = g.op("Slice", [g.init("bert.embeddings.position_embeddings.weight",
                                params["bert.embeddings.position_embeddings.weight"]),
                         g.const([0], np.int64), seq, g.const([0], np.int64)])  # [S, H]
    tok = g.op("Gather", [g.init("bert.embeddings.token_type_embeddings.weight",
                                 params["bert.embeddings.token_type_embeddings.weight"]), "segment_ids"], axis=0)
    emb = g.op("Add", [g.op("Add", [we, pos]), tok])
    # its shape stated: ONNX's inference cannot tell that the sliced positions have the ids' length,
    # and ONNX Runtime fuses Add + LayerNormalization only where both inputs' shapes match by name
    g.value_info.append(g.helper.make_tensor_value_info(emb, TensorProto.FLOAT, ["batch", "seq", cfg.hidden_size]))
    x = w.layer_norm("bert.embeddings.LayerNorm", emb, cfg.layer_norm_eps)

    # additive mask [B, 1, 1, S]: 0 where attended, -10000 where padded
    m = g.op("Cast", ["input_mask"], to=TensorProto.FLOAT)
    mask_add = g.op("Unsqueeze", [g.op("Mul", [g.op("Sub", [g.const(1.0), m]), g.const(-10000.0)]),
                                  g.const([1, 2], np.int64)])

    for i, layer in enumerate(bert.encoder.layer):
        p = f"bert.encoder.layer.{i}."
        att = layer.attention
        ctx = _attention(w, p + "attention.self", att.self, x, mask_add, cfg)
        a, = w.dense([p + "attention.output.dense"], ctx, att.output.dense.aq)
        a = w.layer_norm(p + "attention.output.LayerNorm", g.op("Add", [a, x]), cfg.layer_norm_eps)
        h, = w.dense([p + "intermediate.dense"], a, layer.intermediate.dense.aq)
        h, = w.dense([p + "output.dense"], _gelu(g, h), layer.output.dense.aq, lower=GELU_MIN)
        x = w.layer_norm(p + "output.LayerNorm", g.op("Add", [h, a]), cfg.layer_norm_eps)

    cls = g.op("Gather", [x, g.const(0, np.int64)], axis=1)  # [B, H]
    pooled = g.op("Tanh", w.dense(["bert.pooler.dense"], cls, bert.pooler.dense.aq, lead=("batch",)))
    logits = g.op("Add", [g.op("MatMul", [pooled, g.init("classifier.weight", params["classifier.weight"].T)]),
                          g.init("classifier.bias", params["classifier.bias"])])
    g.nodes.append(g.helper.make_node("Identity", [logits], ["logits"], name="logits"))
    outs = [g.helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", cfg.num_labels])]
    if range_outputs:
        for name, t in g.range_tensors.items():
            g.nodes.append(g.helper.make_node("Identity", [t], [RANGE_PREFIX + name], name=g.name("range")))
            outs.append(g.helper.make_tensor_value_info(RANGE_PREFIX + name, TensorProto.FLOAT, []))
    graph = g.helper.make_graph(g.nodes, f"ternarybert_{run.task}_{run.quant.name}", inputs, outs, g.inits,
                                 value_info=g.value_info)
    opsets = [g.helper.make_opsetid("", OPSET)]
    if any(n.domain == MS_DOMAIN for n in g.nodes):
        opsets.append(g.helper.make_opsetid(MS_DOMAIN, 1))
    model = g.helper.make_model(graph, opset_imports=opsets,
                                producer_name="ternarybert-mindspore", ir_version=IR_VERSION)
    model.doc_string = (f"TernaryBERT {run.quant.name} student for {run.task}: inputs int32 [batch, seq] "
                        f"(input_ids, input_mask, segment_ids) -> logits [batch, {cfg.num_labels}]")
    return model


# The checksum is the file's last metadata entry, ("content_sha256", sha256 of every byte before
# the entry). Protobuf serializes fields in number order and metadata_props (14) is the last field
# this writer fills, so the entry is a fixed-size suffix: a reader checks it without parsing.
_SUM_KEY = b"content_sha256"


def calibrate(net, run, codes: Dict[str, tuple], batches, ops: str = "onnxruntime") -> Tuple[Dict[str, float], int]:
    """Fixed ranges for the symmetric (per-call) activation quantizers, from sample batches.

    Each quantizer gets the largest range m that it computes for any of ``batches`` (iterable of
    numpy (input_ids, input_mask, segment_ids) int32 [B, S]): m = min(max|x|, act_clip), or max x
    for softmax probabilities, as training computes it per batch. The model is run by ONNX Runtime,
    in the graph that export_onnx writes without calibration. Returns ({quantizer name: m}, number
    of batches)."""
    q = run.quant
    if q.act_bits >= 32:
        raise OnnxExportError("calibration fixes activation ranges, and this model's activations are float")
    if q.act_mode != "symmetric":
        raise OnnxExportError(f"calibration fixes the per-batch ranges of act_mode symmetric; this model's "
                              f"ranges ({q.act_mode}) are fixed already and are exported as they are")
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError(f"calibration runs the model in onnxruntime, part of {DEPLOY_EXTRA}") from None
    from .deploy import onnx_feed, session_options
    net.set_train(False)
    model = build_model(net, run, codes, pack_codes=False, ops=ops, range_outputs=True)
    session = ort.InferenceSession(model.SerializeToString(), session_options(),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs() if o.name.startswith(RANGE_PREFIX)]
    top, n = None, 0
    for ids, mask, seg in batches:
        m = np.array([float(v) for v in session.run(names, onnx_feed(ids, mask, seg))], np.float64)  # [quantizers]
        top = m if top is None else np.maximum(top, m)
        n += 1
    if not n:
        raise ValueError("calibration needs at least one batch, and got none")
    return {name[len(RANGE_PREFIX):]: float(v) for name, v in zip(names, top)}, n


def _checksum_entry(hexdigest: str) -> bytes:
    inner = b"\x0a" + bytes([len(_SUM_KEY)]) + _SUM_KEY + b"\x12" + bytes([64]) + hexdigest.encode("ascii")
    return b"\x72" + bytes([len(inner)]) + inner  # field 14, length-delimited


_ENTRY_LEN = len(_checksum_entry("0" * 64))


def check_bytes(raw: bytes, path: str) -> None:
    """Refuse a file that is not whole: its checksum entry must match the bytes before it."""
    if len(raw) <= _ENTRY_LEN:
        raise OnnxExportError(f"{path}: {len(raw)} bytes is too short to be an exported model")
    body, entry = raw[:-_ENTRY_LEN], raw[-_ENTRY_LEN:]
    if entry[:-64] != _checksum_entry("0" * 64)[:-64]:
        raise OnnxExportError(f"{path}: no checksum at its end: truncated, or not written by export.py")
    if hashlib.sha256(body).hexdigest().encode("ascii") != entry[-64:]:
        raise OnnxExportError(f"{path}: checksum mismatch: the file is corrupted")


def export_onnx(net, run, path: str, codes: Optional[Dict[str, tuple]] = None, pack_codes: bool = True,
                ops: str = "onnxruntime", act_ranges: Optional[Dict[str, float]] = None,
                calibration: str = "") -> str:
    """Write ``net`` as a self-describing ONNX file at ``path`` (atomically). Returns the path.

    act_ranges (from ``calibrate``): fixed ranges for the symmetric activation quantizers, recorded in
    the file's metadata with ``calibration`` (what they were measured on)."""
    from .config import atomic_write_bytes
    onnx = import_onnx()
    from .packing import quantized_tensors
    if codes is None:
        codes = quantized_tensors(net, run.quant)
    net.set_train(False)
    model = build_model(net, run, codes, pack_codes, ops, act_ranges)
    # shapes of the intermediate tensors: ONNX Runtime's fusions (SkipLayerNormalization, ...) need them
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model)
    props = {"format": FORMAT, "run_config": json.dumps(run.to_dict(), sort_keys=True),
             "codes": "base3" if pack_codes else "int8", "ops": ops}
    if act_ranges is not None:
        props["calibration"] = json.dumps({"source": calibration, "ranges": act_ranges}, sort_keys=True)
    onnx.helper.set_model_props(model, props)
    body = model.SerializeToString()
    atomic_write_bytes(path, body + _checksum_entry(hashlib.sha256(body).hexdigest()))
    return path


def read_onnx(path: str):
    """(ModelProto, RunConfig) of a file written by export_onnx; refuses other or damaged files."""
    onnx = import_onnx()
    from .config import RunConfig
    with open(path, "rb") as f:
        raw = f.read()
    check_bytes(raw, path)
    model = onnx.ModelProto.FromString(raw)
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("format") != FORMAT:
        raise OnnxExportError(f"{path}: not an ONNX model written by export.py (format "
                              f"{props.get('format')!r}, expected {FORMAT!r})")
    return model, RunConfig.from_dict(json.loads(props["run_config"]), where=path)
