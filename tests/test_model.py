"""The MindSpore BERT against a numpy BERT; quantization off is exactly the float model."""
import numpy as np
import pytest
import mindspore as ms

import numpy_ref as ref
from conftest import randomize, tiny_batch, tiny_config
from src.config import QuantConfig
from src.quant import ActQuant, WeightQuantSTE
from src.tinybert_model import BertForSequenceClassification, quantized_cells

T = ms.Tensor


def _params(net):
    return {n: p.asnumpy() for n, p in net.parameters_and_names()}


@pytest.mark.parametrize("num_labels", [1, 3])
def test_forward_matches_numpy_bert(pynative, num_labels):
    rng = np.random.RandomState(0)
    cfg = tiny_config(num_labels)
    net = BertForSequenceClassification(cfg, QuantConfig.full_precision())
    randomize(net, rng, scale=0.3)
    net.set_train(False)
    ids, mask, seg = tiny_batch(rng)
    logits, hidden, scores = net(T(ids), T(mask), T(seg))
    e_logits, e_hidden, e_scores = ref.bert_forward(_params(net), cfg, ids, mask, seg)
    assert logits.shape == (3, num_labels)
    assert len(hidden) == cfg.num_hidden_layers + 1 and len(scores) == cfg.num_hidden_layers
    np.testing.assert_allclose(logits.asnumpy(), e_logits, atol=1e-5, rtol=1e-5)
    for h, e in zip(hidden, e_hidden):
        np.testing.assert_allclose(h.asnumpy(), e, atol=1e-5, rtol=1e-5)
    for s, e in zip(scores, e_scores):  # pre-softmax, scaled, masked
        np.testing.assert_allclose(s.asnumpy(), e, atol=1e-4, rtol=1e-5)


def test_graph_mode_forward_matches_numpy(graph):
    rng = np.random.RandomState(1)
    cfg = tiny_config(2)
    net = BertForSequenceClassification(cfg, QuantConfig.full_precision())
    randomize(net, rng, scale=0.3)
    net.set_train(False)
    ids, mask, seg = tiny_batch(rng)
    logits = net(T(ids), T(mask), T(seg))[0].asnumpy()
    np.testing.assert_allclose(logits, ref.bert_forward(_params(net), cfg, ids, mask, seg)[0], atol=1e-5)


def test_quantization_off_is_exactly_the_float_model(pynative):
    rng = np.random.RandomState(2)
    cfg = tiny_config(2)
    fp = BertForSequenceClassification(cfg, QuantConfig.full_precision())
    randomize(fp, rng)
    off = BertForSequenceClassification(cfg, QuantConfig(weight_bits=32, embedding_bits=32, act_bits=32,
                                                         ternarizer="lat", act_mode="asymmetric_ema"))
    for (n, p), (n2, p2) in zip(fp.parameters_and_names(), off.parameters_and_names()):
        assert n == n2
        p2.set_data(p.data.copy())
    assert not any(isinstance(c, (ActQuant, WeightQuantSTE)) for _, c in off.cells_and_names())
    fp.set_train(False)
    off.set_train(False)
    ids, mask, seg = tiny_batch(rng)
    a = fp(T(ids), T(mask), T(seg))
    b = off(T(ids), T(mask), T(seg))
    np.testing.assert_array_equal(a[0].asnumpy(), b[0].asnumpy())
    for x, y in zip(a[1], b[1]):
        np.testing.assert_array_equal(x.asnumpy(), y.asnumpy())
    # and the 2-2-8 network with the same weights is NOT the float model
    q = BertForSequenceClassification(cfg, QuantConfig())
    for (_, p), (_, p2) in zip(fp.parameters_and_names(), q.parameters_and_names()):
        p2.set_data(p.data.copy())
    q.set_train(False)
    assert np.abs(q(T(ids), T(mask), T(seg))[0].asnumpy() - a[0].asnumpy()).max() > 1e-3


def test_quantized_tensors_are_chosen_by_cell_type():
    net = BertForSequenceClassification(tiny_config(2), QuantConfig())
    names = sorted(f"{n}.weight" for n, _ in quantized_cells(net))
    expect = ["bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight"]
    for i in range(2):
        p = f"bert.encoder.layer.{i}."
        expect += [p + s + ".weight" for s in ("attention.self.query", "attention.self.key", "attention.self.value",
                                                "attention.output.dense", "intermediate.dense", "output.dense")]
    assert names == sorted(expect)
    # position/token-type embeddings, LayerNorm, biases and the classifier stay float
    for kept in ("position_embeddings", "token_type_embeddings", "LayerNorm", "classifier"):
        assert not any(kept in n for n in names)


def test_rowwise_embedding_gather_equals_quantizing_the_table(pynative):
    """The forward quantizes only the looked-up rows; that must equal quantizing the table."""
    rng = np.random.RandomState(3)
    net = BertForSequenceClassification(tiny_config(2), QuantConfig())
    randomize(net, rng)
    emb = net.bert.embeddings.word_embeddings
    ids = rng.randint(0, 60, (2, 7)).astype(np.int32)
    rows = emb(T(ids)).asnumpy()
    table = ref.twn(np.clip(emb.weight.asnumpy(), -2.5, 2.5), axis=-1)
    np.testing.assert_allclose(rows, table[ids], rtol=1e-6, atol=1e-7)
