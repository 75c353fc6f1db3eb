"""Weight and activation quantizers against numpy references; the STE gradient."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn, ops

import numpy_ref as ref
from src.config import QuantConfig
from src.quant import ActQuant, WeightQuantSTE, quantize_weight

T = ms.Tensor


def _q(w, bits, granularity, qcfg=None, d=None):
    qcfg = qcfg or QuantConfig()
    scale, codes = quantize_weight(T(w), bits, qcfg, granularity, None if d is None else T(d))
    return (scale * codes).asnumpy(), codes.asnumpy()


@pytest.mark.parametrize("shape", [(7, 13), (64, 33)])
def test_twn_layerwise_matches_numpy(pynative, shape):
    w = np.random.RandomState(0).randn(*shape).astype(np.float32) * 0.3
    q, codes = _q(w, 2, "layer")
    np.testing.assert_allclose(q, ref.twn(w), rtol=1e-6, atol=1e-7)
    assert set(np.unique(codes)) <= {-1.0, 0.0, 1.0}
    assert len(np.unique(np.abs(q[q != 0]))) == 1  # one alpha per matrix


def test_twn_rowwise_matches_numpy(pynative):
    w = np.random.RandomState(1).randn(11, 9).astype(np.float32)
    w[3] = 0.0  # an all-zero row must give zeros, not NaN
    q, _ = _q(w, 2, "row")
    np.testing.assert_allclose(q, ref.twn(w, axis=-1), rtol=1e-6, atol=1e-7)
    for r in range(11):  # one alpha per row
        assert len(np.unique(np.abs(q[r][q[r] != 0]))) <= 1


def test_twn_clips_before_ternarizing(pynative):
    w = np.random.RandomState(2).randn(8, 8).astype(np.float32)
    w[0, 0] = 40.0  # would dominate delta and alpha without the clip
    q, _ = _q(w, 2, "layer", QuantConfig(weight_clip=2.5))
    np.testing.assert_allclose(q, ref.twn(np.clip(w, -2.5, 2.5)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("granularity,axis", [("layer", None), ("row", -1)])
def test_lat_matches_numpy(pynative, granularity, axis):
    rng = np.random.RandomState(3)
    w = rng.randn(10, 12).astype(np.float32) * 0.5
    d = (np.abs(rng.randn(10, 12)) + 0.1).astype(np.float32)
    qcfg = QuantConfig(ternarizer="lat", lat_iters=10)
    q, _ = _q(w, 2, granularity, qcfg, d)
    expect = ref.lat(w, d, 10, axis)
    np.testing.assert_allclose(q, expect, rtol=1e-5, atol=1e-6)
    # LAT differs from TWN when d is not uniform (otherwise the test would prove nothing)
    assert not np.allclose(expect, ref.twn(w, axis))


def test_lat_in_a_compiled_training_step_matches_numpy(graph):
    """LAT's loop on a tensor counter compiles in GRAPH_MODE inside the STE cell's forward (the path
    training takes), gives numpy's values there, and passes the gradient straight through."""
    rng = np.random.RandomState(6)
    w = (rng.randn(6, 10) * 0.5).astype(np.float32)
    d = (np.abs(rng.randn(6, 10)) + 0.1).astype(np.float32)
    x = rng.randn(3, 10).astype(np.float32)
    cell = WeightQuantSTE(2, QuantConfig(ternarizer="lat", lat_iters=4, ste_mask=False), "row")

    def loss(w_, d_, x_):
        q = cell(w_, d_)  # [6, 10]
        return (ops.matmul(x_, q.T) ** 2).sum(), q

    step = ms.jit(ms.value_and_grad(loss, grad_position=0, has_aux=True))
    (value, q), grad = step(T(w), T(d), T(x))
    expect_q = ref.lat(w, d, 4, -1)
    np.testing.assert_allclose(q.asnumpy(), expect_q, rtol=1e-5, atol=1e-6)
    # d loss / d q = 2 (x q^T)^T x, passed to w unchanged by the straight-through estimator
    np.testing.assert_allclose(grad.asnumpy(), 2 * (x @ expect_q.T).T @ x, rtol=1e-4, atol=1e-5)


def test_eight_bit_weights_match_numpy(pynative):
    w = np.random.RandomState(4).randn(9, 14).astype(np.float32)
    q, codes = _q(w, 8, "layer")
    np.testing.assert_allclose(q, ref.kbit(w, 8), rtol=1e-6, atol=1e-6)
    assert np.abs(codes).max() == 127
    q, _ = _q(w, 8, "row")
    np.testing.assert_allclose(q, ref.kbit(w, 8, axis=-1), rtol=1e-6, atol=1e-6)


def test_symmetric_activation_quant(pynative):
    x = (np.random.RandomState(5).randn(4, 6, 8) * 1.5).astype(np.float32)
    node = ActQuant(QuantConfig(act_mode="symmetric", act_clip=2.5))
    np.testing.assert_allclose(node(T(x)).asnumpy(), ref.act_sym(x, 2.5), rtol=1e-6, atol=1e-6)


def test_activation_codes_round_ties_to_even(pynative):
    # max|x| = 127 makes the scale exactly 1, so every .5 below is a tie; ties go to the even
    # integer, as numpy's round and ONNX's QuantizeLinear do (hand-computed expectation)
    x = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -3.5, 126.5, 7.25]], np.float32)
    node = ActQuant(QuantConfig(act_mode="symmetric", act_clip=200.0))
    np.testing.assert_array_equal(node(T(x)).asnumpy(), [[127, 0, 2, 2, 0, -4, 126, 7]])


def test_baked_range_gives_the_learned_quantizers_values_exactly(pynative):
    """bake_range (deployment) computes the range's scales once, clamps after scaling: the same
    values as the learned-range quantizer, inside the range, beyond it and at rounding ties."""
    rng = np.random.RandomState(9)
    # MindSpore's scalar division differs from float32's in the last bit for ~1 range in 4: 40 ranges
    for clip in [2.5, 1e-4] + list(rng.uniform(0.05, 3.0, 38)):
        node = ActQuant(QuantConfig(act_mode="learned", act_clip=clip))
        a = max(np.float32(clip), np.float32(1e-3))
        ties = (np.arange(-130, 131) + 0.5).astype(np.float32) * (a / np.float32(127))
        x = np.concatenate([rng.randn(500).astype(np.float32) * clip * 2, ties, [np.float32(1e9), -a, a]])
        x = x.astype(np.float32)[None]
        expect = node(T(x)).asnumpy()
        np.testing.assert_allclose(expect[:, :500], ref.act_fixed(x[:, :500], a)[0], rtol=1e-5, atol=1e-7)
        node.bake_range()
        np.testing.assert_array_equal(node(T(x)).asnumpy(), expect)
    with pytest.raises(ValueError, match="symmetric"):
        ActQuant(QuantConfig(act_mode="symmetric")).bake_range()


def test_asymmetric_ema_activation_quant(pynative):
    rng = np.random.RandomState(6)
    qcfg = QuantConfig(act_mode="asymmetric_ema", act_clip=2.5, act_ema_decay=0.9)
    node = ActQuant(qcfg)
    node.set_train(True)
    lo, hi = -2.5, 2.5
    for _ in range(3):
        x = (rng.randn(5, 7) * 0.8 + 0.3).astype(np.float32)
        lo = 0.9 * lo + 0.1 * x.min()
        hi = 0.9 * hi + 0.1 * x.max()
        np.testing.assert_allclose(node(T(x)).asnumpy(), ref.act_asym(x, lo, hi), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose([node.ema_lo.asnumpy(), node.ema_hi.asnumpy()], [lo, hi], rtol=1e-6)
    node.set_train(False)  # frozen in evaluation
    x = rng.randn(5, 7).astype(np.float32)
    np.testing.assert_allclose(node(T(x)).asnumpy(), ref.act_asym(x, lo, hi), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(node.ema_lo.asnumpy(), lo, rtol=1e-6)


def test_learned_activation_quant_uses_its_clip_not_the_batch(pynative):
    rng = np.random.RandomState(9)
    x = (rng.randn(4, 6, 8) * 1.5).astype(np.float32)
    node = ActQuant(QuantConfig(act_mode="learned", act_clip=2.0))
    np.testing.assert_allclose(node(T(x)).asnumpy(), ref.act_fixed(x, 2.0)[0], rtol=1e-6, atol=1e-6)
    node.clip.set_data(T(np.array([0.7], np.float32)))
    np.testing.assert_allclose(node(T(x)).asnumpy(), ref.act_fixed(x, 0.7)[0], rtol=1e-6, atol=1e-6)
    # a sentence quantizes the same alone as in its batch (the per-batch max-abs mode does not)
    np.testing.assert_array_equal(node(T(x[:1])).asnumpy(), node(T(x)).asnumpy()[:1])
    assert ActQuant(QuantConfig(act_mode="learned", act_clip=2.0), bounded=True).clip.asnumpy() == 1.0


class _WLoss(nn.Cell):
    def __init__(self, q, g):
        super().__init__()
        self.q = q
        self.g = T(g)
        self.d = T(0.0)

    def construct(self, w):
        return (self.q(w, self.d) * self.g).sum()  # dL/dq = g


@pytest.mark.parametrize("mask", [True, False])
def test_weight_ste_gradient(pynative, mask):
    rng = np.random.RandomState(7)
    w = rng.randn(6, 5).astype(np.float32) * 2.0  # some entries beyond the clip 2.5
    w[0, 0], w[1, 1] = 3.0, -2.7
    g = rng.randn(6, 5).astype(np.float32)
    qcfg = QuantConfig(weight_clip=2.5, ste_mask=mask)
    grad = ms.grad(_WLoss(WeightQuantSTE(2, qcfg, "layer"), g))(T(w)).asnumpy()
    expect = g * (np.abs(w) <= 2.5) if mask else g
    np.testing.assert_array_equal(grad, expect)


class _ALoss(nn.Cell):
    def __init__(self, q, g):
        super().__init__()
        self.q = q
        self.g = T(g)

    def construct(self, x):
        return (self.q(x) * self.g).sum()


@pytest.mark.parametrize("mode", ["symmetric", "asymmetric_ema", "learned"])
def test_activation_ste_gradient(pynative, mode):
    rng = np.random.RandomState(8)
    x = (rng.randn(4, 9) * 2).astype(np.float32)
    x[0, 0], x[1, 0] = 3.5, -4.0
    g = rng.randn(4, 9).astype(np.float32)
    node = ActQuant(QuantConfig(act_mode=mode, act_clip=2.5))
    node.set_train(False)  # keep the EMA range at its initial +-2.5
    grad = ms.grad(_ALoss(node, g))(T(x)).asnumpy()
    np.testing.assert_array_equal(grad, g * (np.abs(x) <= 2.5))


def test_learned_clip_gradient_is_lsq(pynative):
    rng = np.random.RandomState(10)
    x = (rng.randn(3, 5, 8) * 1.2).astype(np.float32)
    g = rng.randn(3, 5, 8).astype(np.float32)
    node = ActQuant(QuantConfig(act_mode="learned", act_clip=1.5))
    loss = _ALoss(node, g)
    dx, (dclip,) = ms.grad(loss, grad_position=0, weights=node.trainable_params())(T(x))
    _, dq_dclip = ref.act_fixed(x, 1.5)
    np.testing.assert_array_equal(dx.asnumpy(), g * (np.abs(x) <= 1.5))
    expect = (g * dq_dclip).sum() / np.sqrt(x.size * 127)
    assert (np.abs(x) > 1.5).sum() > 5  # both parts of the gradient are exercised
    np.testing.assert_allclose(dclip.asnumpy(), expect, rtol=1e-4)


def test_bad_quant_config_names_the_field():
    from src.config import ConfigError
    with pytest.raises(ConfigError, match="act_mode must be one of symmetric, asymmetric_ema, learned, got 'pact'"):
        QuantConfig(act_mode="pact")
    with pytest.raises(ConfigError, match="act_clip_lr_scale must be > 0, got 0"):
        QuantConfig(act_mode="learned", act_clip_lr_scale=0)
