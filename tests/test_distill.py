"""Distillation loss terms against numpy; frozen teacher; a GRAPH_MODE step lowers the loss."""
import numpy as np
import pytest
import mindspore as ms

import numpy_ref as ref
from conftest import randomize, tiny_batch, tiny_config
from src.cell_wrapper import (DistillLoss, TaskLoss, TrainOneStep, WarmupLinearLR, attention_kl, build_optimizer,
                              layer_map)
from src.config import DistillConfig, QuantConfig, TrainConfig
from src.dataset import any_length_inputs
from src.tinybert_model import BertForSequenceClassification

T = ms.Tensor


def _pair(rng, num_labels=2, s_layers=2, t_layers=2, quant=None):
    teacher = BertForSequenceClassification(tiny_config(num_labels, layers=t_layers), QuantConfig.full_precision())
    randomize(teacher, rng, scale=0.3)
    student = BertForSequenceClassification(tiny_config(num_labels, layers=s_layers), quant or QuantConfig.full_precision())
    randomize(student, rng, scale=0.3)
    return student, teacher


def _np_loss(s_out, t_out, labels, dcfg, h_map, a_map, regression):
    (sl, sh, ss), (tl, th, ts) = s_out, t_out
    mse = lambda a, b: np.mean((a - b) ** 2)  # noqa: E731
    hid = sum(mse(sh[i], th[j]) for i, j in enumerate(h_map))
    z = lambda x: np.where(x <= -100, 0.0, x)  # noqa: E731
    att = sum(mse(z(ss[i]), z(ts[j])) for i, j in enumerate(a_map))
    if regression:
        target = tl if dcfg.regression_target == "teacher" else labels.reshape(-1, 1)
        pred = mse(sl, target)
        gold = mse(sl.reshape(-1), labels.reshape(-1)) if labels is not None else 0.0
    else:
        ls = _np_log_softmax(sl)
        pred = np.mean(-ref.softmax(tl) * ls)
        gold = -np.mean(ls[np.arange(len(labels)), labels]) if labels is not None else 0.0
    total = (dcfg.hidden_weight * hid + dcfg.attention_weight * att + dcfg.pred_weight * pred
             + dcfg.label_weight * gold)
    return total, (hid, att, pred, gold)


def _outs(net, ids, mask, seg):
    P = {n: p.asnumpy() for n, p in net.parameters_and_names()}
    return ref.bert_forward(P, net.config, ids, mask, seg)


@pytest.mark.parametrize("num_labels,target", [(2, "teacher"), (1, "teacher"), (1, "label")])
def test_distill_loss_matches_numpy(pynative, num_labels, target):
    rng = np.random.RandomState(0)
    student, teacher = _pair(rng, num_labels)
    dcfg = DistillConfig(hidden_weight=1.0, attention_weight=0.5, pred_weight=2.0, label_weight=0.7,
                         regression_target=target)
    ids, mask, seg = tiny_batch(rng)
    labels = rng.rand(3).astype(np.float32) * 5 if num_labels == 1 else rng.randint(0, 2, 3).astype(np.int32)
    loss = DistillLoss(student, teacher, dcfg)
    got = loss(T(ids), T(mask), T(seg), T(labels)).asnumpy()
    expect, parts = _np_loss(_outs(student, ids, mask, seg), _outs(teacher, ids, mask, seg), labels, dcfg,
                             [0, 1, 2], [0, 1], num_labels == 1)
    assert min(parts) > 1e-4  # every term contributes
    np.testing.assert_allclose(got, expect, rtol=2e-5)
    # the terms the training log reports: each unweighted term, in order
    loss.return_terms = True
    total, terms = loss(T(ids), T(mask), T(seg), T(labels))
    assert loss.terms == ("hidden", "attention", "pred", "gold")
    np.testing.assert_allclose(total.asnumpy(), expect, rtol=2e-5)
    np.testing.assert_allclose(terms.asnumpy(), parts, rtol=1e-4)  # fp32 log-softmax: ~3e-5 apart


def test_attention_term_ignores_padded_entries(pynative):
    """Differences only at padded key positions must not count."""
    rng = np.random.RandomState(1)
    student, teacher = _pair(rng)
    dcfg = DistillConfig(hidden_weight=0.0, attention_weight=1.0, pred_weight=0.0)
    ids, mask, seg = tiny_batch(rng)
    loss = DistillLoss(student, teacher, dcfg)
    base = float(loss(T(ids), T(mask), T(seg), T(np.zeros(3, np.int32))).asnumpy())
    _, _, ss = _outs(student, ids, mask, seg)
    _, _, ts = _outs(teacher, ids, mask, seg)
    keep = mask[:, None, None, :].astype(bool)
    expect = sum(np.mean(np.where(np.broadcast_to(keep, s.shape), s - t, 0.0) ** 2) for s, t in zip(ss, ts))
    np.testing.assert_allclose(base, expect, rtol=2e-5)


def _pad(ids, mask, seg, extra, rng):
    """The same batch with ``extra`` more padded positions (random ids there: padding is padding)."""
    b = ids.shape[0]
    return (np.concatenate([ids, rng.randint(0, 60, (b, extra)).astype(np.int32)], 1),
            np.concatenate([mask, np.zeros((b, extra), np.int32)], 1),
            np.concatenate([seg, np.zeros((b, extra), np.int32)], 1))


def test_token_mean_loss_matches_numpy_and_ignores_padding(pynative):
    rng = np.random.RandomState(4)
    student, teacher = _pair(rng)
    dcfg = DistillConfig(hidden_weight=1.0, attention_weight=0.5, pred_weight=0.0, token_mean=True)
    ids, mask, seg = tiny_batch(rng)
    y = T(np.zeros(3, np.int32))
    loss = DistillLoss(student, teacher, dcfg)
    got = float(loss(T(ids), T(mask), T(seg), y).asnumpy())
    (_, sh, ss), (_, th, ts) = _outs(student, ids, mask, seg), _outs(teacher, ids, mask, seg)
    real = mask.astype(bool)  # [B, S]
    pairs = real[:, None, :, None] & real[:, None, None, :]  # [B, 1, S, S]
    hid = sum(np.mean((s - t)[real] ** 2) for s, t in zip(sh, th))
    att = sum(np.mean((s - t)[np.broadcast_to(pairs, s.shape)] ** 2) for s, t in zip(ss, ts))
    np.testing.assert_allclose(got, hid + 0.5 * att, rtol=2e-5)
    padded = [T(x) for x in _pad(ids, mask, seg, 6, rng)]
    np.testing.assert_allclose(float(loss(*padded, y).asnumpy()), got, rtol=1e-5)
    # the paper's means over every position do change with the padding (what token_mean fixes)
    plain = DistillLoss(student, teacher, DistillConfig(hidden_weight=1.0, attention_weight=0.5, pred_weight=0.0))
    a, b = float(plain(T(ids), T(mask), T(seg), y).asnumpy()), float(plain(*padded, y).asnumpy())
    assert abs(a - b) > 0.05 * a


def _np_log_softmax(x):
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_attention_kl(ss, ts, rows):
    """sum over layers of the mean over kept query rows [B, S] (and heads) of KL(p_t || p_s)."""
    total = 0.0
    for s, t in zip(ss, ts):
        lt, ls = _np_log_softmax(t), _np_log_softmax(s)
        kl = (np.exp(lt) * (lt - ls)).sum(-1)  # [B, nh, S]
        total += kl.transpose(0, 2, 1)[rows].mean()
    return total


@pytest.mark.parametrize("token_mean", [True, False])
def test_attention_kl_loss_matches_numpy(pynative, token_mean):
    rng = np.random.RandomState(5)
    student, teacher = _pair(rng)
    dcfg = DistillConfig(hidden_weight=0.0, attention_weight=0.5, pred_weight=0.0, attention_loss="kl",
                         token_mean=token_mean)
    ids, mask, seg = tiny_batch(rng)
    y = T(np.zeros(3, np.int32))
    loss = DistillLoss(student, teacher, dcfg)
    got = float(loss(T(ids), T(mask), T(seg), y).asnumpy())
    (_, _, ss), (_, _, ts) = _outs(student, ids, mask, seg), _outs(teacher, ids, mask, seg)
    rows = mask.astype(bool) if token_mean else np.ones(mask.shape, bool)
    expect = 0.5 * _np_attention_kl(ss, ts, rows)
    assert expect > 1e-3
    np.testing.assert_allclose(got, expect, rtol=1e-4)
    if token_mean:  # padded keys have probability 0 in both, padded rows are left out: padding changes nothing
        padded = [T(x) for x in _pad(ids, mask, seg, 6, rng)]
        np.testing.assert_allclose(float(loss(*padded, y).asnumpy()), got, rtol=1e-5)


def test_attention_kl_gradient_is_the_probability_difference(pynative):
    """d KL(p_t || softmax(s)) / d s = softmax(s) - p_t on every kept row, over the rows' count."""
    rng = np.random.RandomState(6)
    s = rng.randn(2, 3, 5, 5).astype(np.float32)
    t = rng.randn(2, 3, 5, 5).astype(np.float32)
    t[..., -1] -= 10000.0  # a padded key
    rows = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    row_keep = rows.reshape(2, 1, 5, 1)
    n = rows.sum() * 3
    grad = ms.grad(lambda x: attention_kl(x, T(t), T(row_keep), T(n, ms.float32)))(T(s)).asnumpy()
    expect = (np.exp(_np_log_softmax(s)) - np.exp(_np_log_softmax(t))) * row_keep / n
    np.testing.assert_allclose(grad, expect, atol=1e-6)


def test_layer_map_for_a_deeper_teacher(pynative):
    assert layer_map(2, 2) == ([0, 1, 2], [0, 1])
    assert layer_map(2, 6) == ([0, 3, 6], [2, 5])  # (i+1)k - 1 with k = 3
    with pytest.raises(ValueError):
        layer_map(4, 6)
    rng = np.random.RandomState(2)
    student, teacher = _pair(rng, s_layers=1, t_layers=2)
    dcfg = DistillConfig()
    ids, mask, seg = tiny_batch(rng)
    got = DistillLoss(student, teacher, dcfg)(T(ids), T(mask), T(seg), T(np.zeros(3, np.int32))).asnumpy()
    expect, _ = _np_loss(_outs(student, ids, mask, seg), _outs(teacher, ids, mask, seg), None, dcfg,
                         [0, 2], [1], False)
    np.testing.assert_allclose(got, expect, rtol=2e-5)


def test_warmup_linear_schedule():
    lr = WarmupLinearLR(1e-3, 10, 100)
    got = [float(lr(T(np.int32(s))).asnumpy()) for s in (0, 5, 10, 55, 100, 120)]
    np.testing.assert_allclose(got, [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0], atol=1e-9)


def _train(quant, steps, lr=5e-3, seed=3, num_labels=1, adam_eps=1e-6):
    rng = np.random.RandomState(seed)
    teacher = BertForSequenceClassification(tiny_config(num_labels), QuantConfig.full_precision())
    randomize(teacher, rng, scale=0.3)
    student = BertForSequenceClassification(tiny_config(num_labels), quant)
    t_params = dict(teacher.parameters_and_names())
    for n, p in student.parameters_and_names():
        if n in t_params:
            p.set_data(t_params[n].data.copy())
    tcfg = TrainConfig(learning_rate=lr, warmup_ratio=0.0, weight_decay=0.0, adam_eps=adam_eps)
    opt = build_optimizer(student, tcfg, 1000, quant)
    step = TrainOneStep(DistillLoss(student, teacher, DistillConfig()), opt, 1.0, student, quant)
    step.set_train(True)
    ids, mask, seg = tiny_batch(rng, b=4, s=12)
    y = rng.rand(4).astype(np.float32)
    before = {n: p.asnumpy().copy() for n, p in teacher.parameters_and_names()}
    losses = [float(step(T(ids), T(mask), T(seg), T(y))[0].asnumpy()) for _ in range(steps)]
    return losses, before, teacher, student, opt


@pytest.mark.parametrize("act_mode", ["symmetric", "learned"])
def test_graph_distillation_lowers_loss_and_keeps_teacher_frozen(graph, act_mode):
    losses, before, teacher, student, _ = _train(QuantConfig(act_mode=act_mode), 30)
    assert losses[0] > 0.01  # the 2-2-8 student starts away from its teacher
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses
    for n, p in teacher.parameters_and_names():
        np.testing.assert_array_equal(p.asnumpy(), before[n], err_msg=n)


def test_learned_clips_train_at_their_own_learning_rate(pynative):
    # MindSpore's AdamWeightDecay has no bias correction: its first step moves a parameter by
    # lr * 0.1 g / (sqrt(0.001 g^2) + eps) = lr * 3.162 * sign(g) when |g| >> eps (eps 1e-14 here)
    quant = QuantConfig(act_mode="learned", act_clip=2.0, act_clip_lr_scale=10.0)
    before = {n: p.asnumpy().copy() for n, p in _train(quant, 0)[3].parameters_and_names()}
    after = {n: p.asnumpy().copy() for n, p in _train(quant, 1, lr=1e-4, adam_eps=1e-14)[3].parameters_and_names()}
    first = 1e-4 * 0.1 / np.sqrt(0.001)
    clips = [n for n in after if n.endswith(".clip")]
    # per layer: Q/K/V input, Q, K, probabilities, V, attention output, FFN in, FFN out; pooler
    assert len(clips) == 2 * 8 + 1, clips
    moved = np.array([abs(after[n] - before[n]).max() for n in clips])
    np.testing.assert_allclose(moved, 10 * first, rtol=2e-3)
    others = np.array([abs(after[n] - before[n]).max() for n in after if n not in clips])
    assert others.max() <= first * 1.002 and np.isclose(others, first, rtol=2e-3).any()


def test_lat_curvature_is_refreshed_from_adam(graph):
    quant = QuantConfig(ternarizer="lat")
    losses, _, _, student, opt = _train(quant, 3)
    assert np.isfinite(losses).all()
    v = {id(p): m for p, m in zip(opt.parameters, opt.moments2)}
    cell = student.bert.encoder.layer[0].attention.self.query
    np.testing.assert_allclose(cell.lat_d.asnumpy(), np.sqrt(v[id(cell.weight)].asnumpy()) + quant.lat_eps,
                               rtol=1e-6)
    assert not np.allclose(cell.lat_d.asnumpy(), 1.0)


def _two_length_losses(step, rng, regression=True):
    """12 alternating steps on a batch of S=8 and one of S=16 -> losses per length."""
    short, long_ = tiny_batch(rng, b=4, s=8), tiny_batch(rng, b=4, s=16)
    y = T(rng.rand(4).astype(np.float32)) if regression else T(np.array([0, 1, 1, 0], np.int32))
    losses = {8: [], 16: []}
    for _ in range(12):
        for s, batch in ((8, short), (16, long_)):
            losses[s].append(float(step(*(T(x) for x in batch), y)[0].asnumpy()))
    return losses


@pytest.mark.parametrize("attention_loss", ["mse", "kl"])
def test_graph_step_takes_batches_of_several_lengths(graph, attention_loss):
    """Length buckets: the distillation step compiled once with S open (what the trainer
    does) takes batches of S=8 and S=16 and lowers the loss on both."""
    rng = np.random.RandomState(5)
    student, teacher = _pair(rng, num_labels=1, quant=QuantConfig())
    tcfg = TrainConfig(learning_rate=5e-3, warmup_ratio=0.0, weight_decay=0.0)
    step = TrainOneStep(DistillLoss(student, teacher, DistillConfig(token_mean=True, attention_loss=attention_loss)),
                        build_optimizer(student, tcfg, 1000), 1.0)
    step.set_inputs(*any_length_inputs("sts-b", 4))
    step.set_train(True)
    for s, ls in _two_length_losses(step, rng).items():
        assert np.isfinite(ls).all() and np.mean(ls[-3:]) < 0.6 * ls[0], (s, ls)


def _finetune_step(rng):
    """A fine-tuning step (TaskLoss: one network in the loss) on a tiny float classifier."""
    net = BertForSequenceClassification(tiny_config(2), QuantConfig.full_precision())
    randomize(net, rng, scale=0.3)
    tcfg = TrainConfig(learning_rate=5e-3, warmup_ratio=0.0, weight_decay=0.0)
    return TrainOneStep(TaskLoss(net), build_optimizer(net, tcfg, 1000), 1.0)


@pytest.mark.parametrize("graphs", ["static", "open"])
def test_single_network_loss_trains_with_length_buckets(graph, graphs):
    """Fine-tuning (one network in the loss) with length buckets, on one static graph per S or
    on one graph with S open. The open graph failed to compile in MindSpore 2.10 while the
    positions came from ops.arange(S) ("The pointer[manager] is null")."""
    rng = np.random.RandomState(6)
    step = _finetune_step(rng)
    if graphs == "open":
        step.set_inputs(*any_length_inputs("cola", 4))
    step.set_train(True)
    for s, ls in _two_length_losses(step, rng, regression=False).items():
        assert np.isfinite(ls).all() and np.mean(ls[-3:]) < 0.6 * ls[0], (s, ls)


def _fp16_pair_step(tcfg, seed=8):
    rng = np.random.RandomState(seed)
    student, teacher = _pair(rng, num_labels=1, quant=QuantConfig())
    step = TrainOneStep(DistillLoss(student, teacher, DistillConfig()), build_optimizer(student, tcfg, 1000), 1.0,
                        student, QuantConfig(), tcfg)
    step.set_train(True)
    ids, mask, seg = tiny_batch(rng, b=4, s=12)
    return step, student, [T(ids), T(mask), T(seg), T(rng.rand(4).astype(np.float32))]


def test_fp16_steps_track_fp32_and_an_overflowing_step_is_skipped(graph):
    """--compute_type fp16: the same steps as fp32 to fp16 precision; a loss scale that overflows
    float16 skips the step (no parameter moves) and halves the scale; a clean window doubles it."""
    base = dict(learning_rate=5e-3, warmup_ratio=0.0, weight_decay=0.0)
    runs = {}
    for ct in ("fp32", "fp16"):
        step, _, batch = _fp16_pair_step(TrainConfig(compute_type=ct, loss_scale=1024.0, **base))
        runs[ct] = [step(*batch) for _ in range(6)]
    l32 = np.array([float(r[0].asnumpy()) for r in runs["fp32"]])
    l16 = np.array([float(r[0].asnumpy()) for r in runs["fp16"]])
    assert not any(bool(r[2].asnumpy()) for r in runs["fp16"])
    # the first loss (same weights) to float16 precision; later steps follow a 2-2-8 trajectory whose
    # ternary and 8-bit roundings can flip on float16-sized differences: close, not equal
    np.testing.assert_allclose(l16[0], l32[0], rtol=1e-3)
    np.testing.assert_allclose(l16, l32, rtol=0.1)
    assert l16[-1] < 0.7 * l16[0] and l32[-1] < 0.7 * l32[0]

    # 2^40 overflows float16 (max 65504) in the backward pass: skipped, scale halved, nothing moved
    step, student, batch = _fp16_pair_step(TrainConfig(compute_type="fp16", loss_scale=2.0 ** 40,
                                                       loss_scale_window=2, **base))
    before = {n: p.asnumpy().copy() for n, p in student.parameters_and_names()}
    loss, _, overflow = step(*batch)
    assert bool(overflow.asnumpy()) and np.isfinite(loss.asnumpy())
    assert float(step.loss_scale.asnumpy()) == 2.0 ** 39
    for n, p in student.parameters_and_names():
        np.testing.assert_array_equal(p.asnumpy(), before[n], err_msg=n)
    # scale down until the steps are clean (2^40 -> ~2^11 here), then 2 clean steps double it
    scales = []
    for _ in range(40):
        _, _, overflow = step(*batch)
        scales.append((bool(overflow.asnumpy()), float(step.loss_scale.asnumpy())))
    first_clean = next(i for i, (o, _) in enumerate(scales) if not o)
    assert all(o for o, _ in scales[:first_clean]) and not scales[first_clean + 1][0]
    assert scales[first_clean + 1][1] == 2 * scales[first_clean - 1][1]  # doubled after the 2-step window
    moved = any(not np.array_equal(p.asnumpy(), before[n]) for n, p in student.parameters_and_names())
    assert moved
