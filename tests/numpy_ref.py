"""Independent numpy references (written from the paper / BERT definitions, not from src/)."""
import math

import numpy as np


# ---- weight quantizers ---------------------------------------------------------------
def twn(w, axis=None):
    """TWN per tensor (axis None) or per row (axis=-1): returns alpha * b."""
    w = np.asarray(w, np.float64)
    kd = axis is not None
    delta = 0.7 * np.mean(np.abs(w), axis=axis, keepdims=kd)
    b = np.where(np.abs(w) > delta, np.sign(w), 0.0)
    cnt = np.sum(b != 0, axis=axis, keepdims=kd)
    alpha = np.sum(np.abs(w) * (b != 0), axis=axis, keepdims=kd) / np.maximum(cnt, 1)
    return alpha * b


def lat(w, d, iters, axis=None):
    """Loss-aware ternarization, alternating alpha and b from the TWN start."""
    w = np.asarray(w, np.float64)
    d = np.asarray(d, np.float64)
    kd = axis is not None
    q = twn(w, axis)
    b = np.sign(q)
    alpha = None
    for _ in range(iters):
        alpha = np.sum(np.abs(b * d * w), axis=axis, keepdims=kd) / np.sum(np.abs(b * d), axis=axis, keepdims=kd)
        b = np.round(np.clip(w / alpha, -1, 1))
    return alpha * b


def kbit(w, bits, axis=None):
    w = np.asarray(w, np.float64)
    s = (2 ** (bits - 1) - 1) / np.max(np.abs(w), axis=axis, keepdims=axis is not None)
    return np.round(w * s) / s


def act_sym(x, clip, bits=8):
    x = np.clip(np.asarray(x, np.float64), -clip, clip)
    s = (2 ** (bits - 1) - 1) / np.max(np.abs(x))
    return np.round(x * s) / s


def act_fixed(x, clip, bits=8):
    """Fake-quant on the fixed range [-clip, clip]; and LSQ's d q / d clip (Esser et al. 2020)."""
    n = 2 ** (bits - 1) - 1
    x = np.asarray(x, np.float64)
    s = clip / n
    q = np.round(np.clip(x, -clip, clip) / s) * s
    inside = np.abs(x) <= clip
    dq_dclip = np.where(inside, (np.round(x / s) - x / s) / n, np.sign(x))
    return q, dq_dclip


def act_asym(x, lo, hi, bits=8):
    s = (hi - lo) / (2 ** bits - 1)
    x = np.clip(np.asarray(x, np.float64), lo, hi)
    return np.round((x - lo) / s) * s + lo


# ---- BERT ------------------------------------------------------------------------------
def _erf(x):
    return np.vectorize(math.erf)(x)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def bert_forward(P, cfg, ids, mask, seg):
    """Hugging Face BertForSequenceClassification in float64 numpy.

    P: {hugging face style name: array}. Returns logits, hidden states, pre-softmax scores.
    """
    f = lambda n: np.asarray(P[n], np.float64)  # noqa: E731
    B, S = ids.shape
    H, nh = cfg.hidden_size, cfg.num_attention_heads
    hd = H // nh
    x = f("bert.embeddings.word_embeddings.weight")[ids] + f("bert.embeddings.position_embeddings.weight")[np.arange(S)][None] \
        + f("bert.embeddings.token_type_embeddings.weight")[seg]
    x = layer_norm(x, f("bert.embeddings.LayerNorm.weight"), f("bert.embeddings.LayerNorm.bias"), cfg.layer_norm_eps)
    add = (1.0 - mask[:, None, None, :]) * -10000.0
    hidden, scores = [x], []
    lin = lambda x, n: x @ f(n + ".weight").T + f(n + ".bias")  # noqa: E731
    for i in range(cfg.num_hidden_layers):
        p = f"bert.encoder.layer.{i}."
        heads = lambda t: t.reshape(B, S, nh, hd).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = (heads(lin(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
        sc = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + add
        scores.append(sc)
        ctx = (softmax(sc) @ v).transpose(0, 2, 1, 3).reshape(B, S, H)
        a = layer_norm(lin(ctx, p + "attention.output.dense") + x, f(p + "attention.output.LayerNorm.weight"),
                       f(p + "attention.output.LayerNorm.bias"), cfg.layer_norm_eps)
        h = gelu(lin(a, p + "intermediate.dense"))
        x = layer_norm(lin(h, p + "output.dense") + a, f(p + "output.LayerNorm.weight"),
                       f(p + "output.LayerNorm.bias"), cfg.layer_norm_eps)
        hidden.append(x)
    pooled = np.tanh(lin(x[:, 0], "bert.pooler.dense"))
    return lin(pooled, "classifier"), hidden, scores
