"""BERT for TernaryBERT: Hugging Face numerics, pluggable quantization.

Numerics equal Hugging Face ``BertModel`` (erf GELU, LayerNorm eps from the config,
additive mask -10000, scores / sqrt(head_dim), pooler = tanh(Dense(h_CLS)) with no ReLU).
Parameter names mirror Hugging Face's (``bert.encoder.layer.0.attention.self.query.weight``)
so the import name map in src/checkpoint.py stays short and readable.

Quantization is decided by cell type:
  * ``QuantDense`` (Q, K, V, attention output, FFN in/out, pooler): weight quantized with
    ``weight_bits``, input fake-quantized with ``act_bits``;
  * ``QuantEmbedding`` (word embedding): ``embedding_bits``, row- or layer-wise;
  * ``Embedding`` (position, token type), ``LayerNorm``, biases and the classifier
    (``nn.Dense``) stay full precision.
Q and K are fake-quantized before Q.K^T, the softmax probabilities and V before P.V.
With a float QuantConfig no quantization op is created at all: the network IS the float one.

Forward of ``BertForSequenceClassification``:
  (input_ids [B,S], input_mask [B,S], segment_ids [B,S]) ->
  (logits [B,num_labels], hidden_states: L+1 x [B,S,H], attention_scores: L x [B,nh,S,S])
where hidden_states[0] is the embedding output after LayerNorm and the scores are scaled,
masked and pre-softmax (what the distillation loss compares).
"""
from __future__ import annotations

import math

import numpy as np
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import Normal, Zero, initializer

from .config import BertConfig, QuantConfig
from .quant import WeightQuantSTE, make_act_quant

_INIT_STD = 0.02


def _param(shape, name, init="normal", requires_grad=True):
    init_obj = Normal(_INIT_STD) if init == "normal" else Zero()
    return ms.Parameter(initializer(init_obj, shape, ms.float32), name=name,
                        requires_grad=requires_grad)


def _dropout(p: float):
    return nn.Dropout(p=p) if p > 0 else None


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis; parameters ``weight``/``bias`` as in Hugging Face."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = ms.Parameter(ms.Tensor(np.ones(size, np.float32)), name="weight")
        self.bias = ms.Parameter(ms.Tensor(np.zeros(size, np.float32)), name="bias")
        self.norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x):
        return self.norm(x, self.weight, self.bias)[0]


def gelu(x):
    """Exact (erf) GELU, as HF "gelu": x * Phi(x) = x (0.5 + 0.5 erf(x / sqrt 2)).

    Written out rather than ``ops.gelu(approximate="none")`` because that one divides the
    whole tensor by sqrt(2) (a Div, twice the cost of this Mul on CPU, and again in backward).
    """
    return x * (0.5 + 0.5 * ops.erf(x * 0.7071067811865476))


def _matmul(op, a, b, dtype):
    """op(a, b) with both operands in ``dtype`` (training's compute type) and a float32 result;
    float32: the plain product, no cast."""
    if dtype == ms.float32:
        return op(a, b)
    return op(a.astype(dtype), b.astype(dtype)).astype(ms.float32)


def compute_dtype_of(net: nn.Cell):
    """The dtype ``net``'s matrix products run in (see set_compute_dtype), or None if it has none."""
    return next((c.compute_dtype for _, c in net.cells_and_names() if hasattr(c, "compute_dtype")), None)


def set_compute_dtype(net: nn.Cell, dtype) -> nn.Cell:
    """Run the matrix products of ``net`` (its dense layers and attention) in ``dtype``; the
    quantizers, LayerNorm, softmax and everything else stay float32. Chosen by cell type."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, (QuantDense, BertSelfAttention)):
            cell.compute_dtype = dtype
    return net


class QuantWeightCell(nn.Cell):
    """What the cells with a quantized ``weight`` share (QuantDense, QuantEmbedding): the weight
    quantizer, LAT's curvature, and the weight as the forward pass sees it."""

    def _init_weight_quant(self, bits: int, qcfg: QuantConfig, granularity: str) -> None:
        self.bits, self.granularity = bits, granularity
        self.wq = (WeightQuantSTE(bits, qcfg, granularity)
                   if bits < 32 and not qcfg.weights_prequantized else None)
        self.lat = self.wq is not None and bits == 2 and qcfg.ternarizer == "lat"
        if self.lat:
            # diag(sqrt(v)) + eps of Adam, refreshed by the train cell after every step.
            self.lat_d = ms.Parameter(ms.Tensor(np.ones(self.weight.shape, np.float32)), name="lat_d",
                                      requires_grad=False)
        else:
            self.no_d = ms.Tensor(0.0, ms.float32)

    def curvature(self):
        """LAT's d for the weight ([same shape]); TWN ignores it (a scalar 0)."""
        return self.lat_d if self.lat else self.no_d

    def quantized_weight(self):
        """The weight the forward pass uses (the whole table for an embedding)."""
        if self.wq is None:
            return self.weight
        return self.wq(self.weight, self.curvature())


class QuantDense(QuantWeightCell):
    """y = q_a(x) @ q_w(W)^T + b. Weight [out, in] as nn.Dense / torch.nn.Linear store it."""

    def __init__(self, in_features: int, out_features: int, qcfg: QuantConfig,
                 quant_input: bool = True):
        super().__init__()
        self.weight = _param((out_features, in_features), "weight")
        self.bias = _param((out_features,), "bias", init="zero")
        self.in_features = in_features
        self.out_features = out_features
        self._init_weight_quant(qcfg.weight_bits, qcfg, "layer")
        # quant_input=False: the caller already fake-quantized x (Q/K/V share one input node)
        self.aq = make_act_quant(qcfg) if quant_input else None
        self.matmul = ops.MatMul(transpose_b=True)
        self.compute_dtype = ms.float32  # set_compute_dtype

    def construct(self, x):
        # x: [..., in] -> [..., out]
        if self.aq is not None:
            x = self.aq(x)
        lead = x.shape[:-1]
        y = _matmul(self.matmul, x.reshape(-1, self.in_features), self.quantized_weight(), self.compute_dtype)
        y = ops.bias_add(y, self.bias)
        return y.reshape(lead + (self.out_features,))


class Embedding(nn.Cell):
    """Full-precision lookup table, parameter ``weight`` [num, dim]."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.weight = _param((num, dim), "weight")

    def construct(self, ids):
        return ops.gather(self.weight, ids, 0)


class QuantEmbedding(QuantWeightCell):
    """Word embedding with quantized rows.

    Row-wise statistics depend only on the row, so the rows are gathered first and only
    the B*S looked-up rows are quantized (exactly what quantizing the whole table and then
    gathering gives, at a fraction of the cost). Layer-wise needs the whole table.
    """

    def __init__(self, num: int, dim: int, qcfg: QuantConfig):
        super().__init__()
        self.weight = _param((num, dim), "weight")
        self._init_weight_quant(qcfg.embedding_bits, qcfg, qcfg.embedding_granularity)

    def construct(self, ids):
        # ids: [B, S] -> [B, S, dim]
        if self.wq is None or self.granularity == "layer":
            return ops.gather(self.quantized_weight(), ids, 0)
        rows = ops.gather(self.weight, ids.reshape(-1), 0)  # [B*S, dim]
        d = ops.gather(self.lat_d, ids.reshape(-1), 0) if self.lat else self.no_d
        q = self.wq(rows, d)
        return q.reshape(ids.shape + (q.shape[-1],))


class BertEmbeddings(nn.Cell):
    def __init__(self, cfg: BertConfig, qcfg: QuantConfig):
        super().__init__()
        self.word_embeddings = QuantEmbedding(cfg.vocab_size, cfg.hidden_size, qcfg)
        self.position_embeddings = Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)  # HF name
        self.dropout = _dropout(cfg.hidden_dropout_prob)

    def construct(self, input_ids, segment_ids):
        # [B, S] -> [B, S, H]
        # positions 0 .. S-1 [1, S], counted along the ids: with ops.arange(S) a one-network
        # training graph with S left open fails to compile in MindSpore 2.10 ("The
        # pointer[manager] is null", parameter elimination; tests/test_distill.py)
        pos = ops.cumsum(ops.ones_like(input_ids[:1]), 1) - 1
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos) \
            + self.token_type_embeddings(segment_ids)
        x = self.LayerNorm(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return x


class BertSelfAttention(nn.Cell):
    def __init__(self, cfg: BertConfig, qcfg: QuantConfig):
        super().__init__()
        h = cfg.hidden_size
        self.nh = cfg.num_attention_heads
        self.hd = cfg.head_dim
        # Q, K and V read the same input: fake-quantize it once, not three times.
        self.in_quant = make_act_quant(qcfg)
        self.query = QuantDense(h, h, qcfg, quant_input=False)
        self.key = QuantDense(h, h, qcfg, quant_input=False)
        self.value = QuantDense(h, h, qcfg, quant_input=False)
        self.inv_sqrt_hd = 1.0 / math.sqrt(self.hd)
        self.qk = ops.BatchMatMul(transpose_b=True)
        self.dropout = _dropout(cfg.attention_probs_dropout_prob)
        self.q_quant = make_act_quant(qcfg)
        self.k_quant = make_act_quant(qcfg)
        self.p_quant = make_act_quant(qcfg, bounded=True)
        self.v_quant = make_act_quant(qcfg)
        self.compute_dtype = ms.float32  # set_compute_dtype

    def _heads(self, x):
        # [B, S, H] -> [B, nh, S, hd]
        b, s, _ = x.shape
        return x.reshape(b, s, self.nh, self.hd).transpose(0, 2, 1, 3)

    def construct(self, x, mask_add):
        # x [B, S, H], mask_add [B, 1, 1, S] -> context [B, S, H], scores [B, nh, S, S]
        xq = self.in_quant(x) if self.in_quant is not None else x
        q = self._heads(self.query(xq))
        k = self._heads(self.key(xq))
        v = self._heads(self.value(xq))
        if self.q_quant is not None:
            q = self.q_quant(q)
            k = self.k_quant(k)
        # Scale q [B, nh, S, hd] rather than the scores [B, nh, S, S] (4x fewer elements at
        # S = 128); the batched matmul reads k transposed, with no transposed copy of it.
        scores = _matmul(self.qk, q * self.inv_sqrt_hd, k, self.compute_dtype) + mask_add
        probs = ops.softmax(scores, axis=-1)
        if self.dropout is not None:
            probs = self.dropout(probs)
        if self.p_quant is not None:
            probs = self.p_quant(probs)
            v = self.v_quant(v)
        ctx = _matmul(ops.matmul, probs, v, self.compute_dtype)  # [B, nh, S, hd]
        b, _, s, _ = ctx.shape
        ctx = ctx.transpose(0, 2, 1, 3).reshape(b, s, self.nh * self.hd)
        return ctx, scores


class BertDenseOutput(nn.Cell):
    """dense -> dropout -> LayerNorm(x + residual): HF's SelfOutput and Output."""

    def __init__(self, in_size: int, cfg: BertConfig, qcfg: QuantConfig):
        super().__init__()
        self.dense = QuantDense(in_size, cfg.hidden_size, qcfg)
        self.LayerNorm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.dropout = _dropout(cfg.hidden_dropout_prob)

    def construct(self, x, residual):
        x = self.dense(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.LayerNorm(x + residual)


class BertAttention(nn.Cell):
    def __init__(self, cfg: BertConfig, qcfg: QuantConfig):
        super().__init__()
        self.self = BertSelfAttention(cfg, qcfg)  # HF name
        self.output = BertDenseOutput(cfg.hidden_size, cfg, qcfg)

    def construct(self, x, mask_add):
        ctx, scores = self.self(x, mask_add)
        return self.output(ctx, x), scores


class BertIntermediate(nn.Cell):
    def __init__(self, cfg: BertConfig, qcfg: QuantConfig):
        super().__init__()
        self.dense = QuantDense(cfg.hidden_size, cfg.intermediate_size, qcfg)

    def construct(self, x):
        return gelu(self.dense(x))


class BertLayer(nn.Cell):
    def __init__(self, cfg: BertConfig, qcfg: QuantConfig):
        super().__init__()
        self.attention = BertAttention(cfg, qcfg)
        self.intermediate = BertIntermediate(cfg, qcfg)
        self.output = BertDenseOutput(cfg.intermediate_size, cfg, qcfg)

    def construct(self, x, mask_add):
        a, scores = self.attention(x, mask_add)
        return self.output(self.intermediate(a), a), scores


class BertEncoder(nn.Cell):
    def __init__(self, cfg: BertConfig, qcfg: QuantConfig):
        super().__init__()
        self.layer = nn.CellList([BertLayer(cfg, qcfg) for _ in range(cfg.num_hidden_layers)])

    def construct(self, x, mask_add):
        hidden = (x,)
        scores = ()
        for layer in self.layer:
            x, s = layer(x, mask_add)
            hidden = hidden + (x,)
            scores = scores + (s,)
        return hidden, scores


class BertPooler(nn.Cell):
    def __init__(self, cfg: BertConfig, qcfg: QuantConfig):
        super().__init__()
        self.dense = QuantDense(cfg.hidden_size, cfg.hidden_size, qcfg)

    def construct(self, x):
        # [B, S, H] -> [B, H]; tanh only (no ReLU, unlike the model_zoo port)
        return ops.tanh(self.dense(x[:, 0]))


def additive_mask(input_mask):
    """[B, S] 1/0 -> [B, 1, 1, S]: 0 where attended, -10000 where padded (added to the scores)."""
    return (1.0 - input_mask.astype(ms.float32)).reshape(input_mask.shape[0], 1, 1, input_mask.shape[1]) * -10000.0


class BertModel(nn.Cell):
    def __init__(self, cfg: BertConfig, qcfg: QuantConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg, qcfg)
        self.encoder = BertEncoder(cfg, qcfg)
        self.pooler = BertPooler(cfg, qcfg)

    def construct(self, input_ids, input_mask, segment_ids):
        x = self.embeddings(input_ids, segment_ids)
        hidden, scores = self.encoder(x, additive_mask(input_mask))
        pooled = self.pooler(hidden[-1])
        return hidden, scores, pooled


class BertForSequenceClassification(nn.Cell):
    """BERT + dropout + full-precision classifier on the pooled output (1 output = regression)."""

    def __init__(self, cfg: BertConfig, qcfg: QuantConfig = None):
        super().__init__()
        qcfg = qcfg if qcfg is not None else QuantConfig.full_precision()
        self.config = cfg
        self.qcfg = qcfg
        self.bert = BertModel(cfg, qcfg)
        self.dropout = _dropout(cfg.hidden_dropout_prob)
        self.classifier = nn.Dense(cfg.hidden_size, cfg.num_labels,
                                   weight_init=Normal(_INIT_STD), bias_init="zeros")

    def construct(self, input_ids, input_mask, segment_ids):
        hidden, scores, pooled = self.bert(input_ids, input_mask, segment_ids)
        if self.dropout is not None:
            pooled = self.dropout(pooled)
        logits = self.classifier(pooled)
        return logits, hidden, scores


class LogitsOnly(nn.Cell):
    """Evaluation / export view: inputs -> logits [B, num_labels]."""

    def __init__(self, net: BertForSequenceClassification):
        super().__init__()
        self.net = net

    def construct(self, input_ids, input_mask, segment_ids):
        return self.net(input_ids, input_mask, segment_ids)[0]


class _Front(nn.Cell):
    """Embeddings and the additive attention mask: (ids, mask, segments) -> (x, mask_add)."""

    def __init__(self, bert: BertModel):
        super().__init__()
        self.embeddings = bert.embeddings

    def construct(self, input_ids, input_mask, segment_ids):
        return self.embeddings(input_ids, segment_ids), additive_mask(input_mask)


class _Slot(nn.Cell):
    def __init__(self, layer: BertLayer):
        super().__init__()
        self.layer = layer

    def construct(self, x, mask_add):
        return self.layer(x, mask_add)[0]


class _Back(nn.Cell):
    def __init__(self, net: BertForSequenceClassification):
        super().__init__()
        self.pooler, self.classifier = net.bert.pooler, net.classifier

    def construct(self, x):
        return self.classifier(self.pooler(x))  # dropout: none in inference


class LayerStreamed:
    """Evaluation view of ``net`` (in inference mode): inputs -> logits [B, num_labels], the same
    values as LogitsOnly(net), with one compiled encoder layer that every layer's parameters are
    loaded into in turn.

    MindSpore keeps a compiled graph's buffers for the life of the process: the whole network as
    one evaluation graph held ~1 GiB at 32 x 128 beside the training graph's, one layer's graph
    about a sixth of it (docs/performance.md). Loading a layer's parameters rebinds tensors, no
    copy. The network itself is not changed. For networks without weight quantizers (float, or
    frozen: src.packing.FrozenTwin), whose layers hold nothing but their parameters."""

    def __init__(self, net: BertForSequenceClassification):
        if quantized_cells(net):
            raise ValueError("LayerStreamed runs networks without weight quantizers: stream the frozen twin "
                             "(src.packing.FrozenTwin) of a network in training")
        self.front, self.back = _Front(net.bert), _Back(net)
        source = net.bert.encoder.layer
        slot = BertLayer(net.config, net.qcfg)
        set_compute_dtype(slot, compute_dtype_of(source[0]))
        slot.set_train(False)
        self.slot = _Slot(slot)
        self.slot_params = dict(slot.parameters_and_names())
        self.layers = [dict(layer.parameters_and_names()) for layer in source]
        for i, params in enumerate(self.layers):
            if set(params) != set(self.slot_params):  # e.g. a frozen network's layers lack weight quantizers
                raise ValueError(f"encoder layer {i} has parameters {sorted(set(params) ^ set(self.slot_params))[:4]} "
                                 f"that a layer of its config does not (or lacks theirs)")

    def __call__(self, input_ids, input_mask, segment_ids):
        x, mask_add = self.front(input_ids, input_mask, segment_ids)  # [B, S, H], [B, 1, 1, S]
        for params in self.layers:
            for name, p in self.slot_params.items():
                p.set_data(params[name])
            x = self.slot(x, mask_add)  # [B, S, H]
        return self.back(x)  # [B, num_labels]


def quantized_cells(net: nn.Cell):
    """(name, cell) of every cell whose weight is quantized, chosen by cell type."""
    return [(n, c) for n, c in net.cells_and_names()
            if isinstance(c, QuantWeightCell) and c.wq is not None]


def with_dropout(cfg: BertConfig, p: float) -> BertConfig:
    """A copy of cfg with both dropout probabilities set to p (students train with 0)."""
    import dataclasses
    return dataclasses.replace(cfg, hidden_dropout_prob=p, attention_probs_dropout_prob=p)
