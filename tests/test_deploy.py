"""Deployment: the ONNX model against the MindSpore network and numpy, the frozen MINDIR against
eval, eval.py / predict.py on every file kind, damaged files refused with their names."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import mindspore as ms

from conftest import ROOT, VOCAB, randomize, synthetic_glue, tiny_batch, tiny_config
from numpy_ref import twn
from src.checkpoint import load_network, save_network
from src.config import QuantConfig, RunConfig
from src.deploy import ModelFileError, OnnxPredictor, load_predictor
from src.tinybert_model import BertForSequenceClassification, LogitsOnly

onnx = pytest.importorskip("onnx")  # the deployment extra (requirements-deploy.txt); CI installs it
T = ms.Tensor

# Weights at scale 0.1 keep activations in the range a trained BERT has (LayerNorm-sized): there the
# ONNX graph and MindSpore agree to ~1e-7; at larger scales float-rounding differences between the two
# runtimes flip an occasional 8-bit activation code at a rounding boundary, which moves a logit by ~1e-3.
W_SCALE = 0.1
QUANTS = {
    "2-2-8-twn-row": QuantConfig(),
    "8-8-8": QuantConfig(weight_bits=8, embedding_bits=8),
    "2-2-8-lat-layer-ema": QuantConfig(ternarizer="lat", embedding_granularity="layer", act_mode="asymmetric_ema"),
    "2-2-8-learned": QuantConfig(act_mode="learned"),
    # float weights, fixed 8-bit activation ranges: Q, K, V quantized one by one after a float product
    "32-32-8-learned": QuantConfig(weight_bits=32, embedding_bits=32, act_mode="learned"),
    "2-2-32": QuantConfig(act_bits=32),
    "32-32-32": QuantConfig.full_precision(),
}


def _student(quant, rng, num_labels=3, task="mnli"):
    cfg = tiny_config(num_labels)
    net = BertForSequenceClassification(cfg, quant)
    randomize(net, rng, W_SCALE)
    for n, p in net.parameters_and_names():  # quantizer state away from its initial values
        if n.endswith("lat_d"):
            p.set_data(T(np.abs(rng.randn(*p.shape)).astype(np.float32) + 0.1))
        elif n.endswith("ema_lo"):
            p.set_data(T(np.float32(-rng.uniform(0.5, 2.0))))
        elif n.endswith("ema_hi"):
            p.set_data(T(np.float32(rng.uniform(0.5, 2.0))))
        elif n.endswith(".clip"):
            p.set_data(T(rng.uniform(0.3, 2.0, size=(1,)).astype(np.float32)))
    net.set_train(False)
    return net, RunConfig(task=task, model=cfg, quant=quant)


def _batches(rng):
    yield tiny_batch(rng, b=3, s=10)
    yield tiny_batch(rng, b=1, s=5)
    yield tiny_batch(rng, b=4, s=17)
    yield tiny_batch(rng, b=2, s=32)  # the position table's full length


@pytest.mark.parametrize("name", list(QUANTS))
def test_onnx_logits_equal_the_network(tmp_path, pynative, name):
    from src.onnx_export import export_onnx
    rng = np.random.RandomState(0)
    net, run = _student(QUANTS[name], rng)
    # ONNX Runtime's fused integer layers, and the standard-operator form other runtimes read
    variants = [("base3", "onnxruntime")] + ([("base3", "standard")] if not run.quant.is_float else [])
    if name == "2-2-8-twn-row":
        variants.append(("int8", "onnxruntime"))
    for codes, ops in variants:
        path = export_onnx(net, run, str(tmp_path / f"m_{codes}_{ops}.onnx"), pack_codes=codes == "base3", ops=ops)
        model = OnnxPredictor(path)
        assert model.run == run
        fwd = LogitsOnly(net)
        for ids, mask, seg in _batches(rng):  # dynamic batch and length, padded rows
            ref = fwd(T(ids), T(mask), T(seg)).asnumpy()
            got = model(ids, mask, seg)
            assert got.shape == ref.shape
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    if not run.quant.is_float:  # and the quantization is really there: the float network differs
        float_net = BertForSequenceClassification(run.model, QuantConfig.full_precision())
        src = dict(net.parameters_and_names())
        for n, p in float_net.parameters_and_names():
            p.set_data(src[n].data.copy())
        float_net.set_train(False)
        assert np.abs(LogitsOnly(float_net)(T(ids), T(mask), T(seg)).asnumpy() - got).max() > 1e-4


# Run an ONNX model on saved batches in a fresh process (argv: model, inputs .npz, outputs .npz, n),
# one intra-op thread, and print what numpy's CPUID probe sees.
_AVX2_WORKER = (
    "import json, sys, numpy as np; from src.deploy import OnnxPredictor; "
    "from numpy.core._multiarray_umath import __cpu_features__ as f; "
    "m = OnnxPredictor(sys.argv[1], threads=1); d = np.load(sys.argv[2]); "
    "np.savez(sys.argv[3], *[m(d[f'ids{i}'], d[f'mask{i}'], d[f'seg{i}']) for i in range(int(sys.argv[4]))]); "
    "print(json.dumps({k: bool(f.get(k)) for k in ('AVX2', 'AVX512F')}))")


def _avx2_runner(runner, tmp_path):
    """(command prefix, environment) that run a Python process on AVX2 kernels: valgrind's CPU, or
    this CPU under benchmarks/avx2_only.py's AVX2-only view (natively, seconds instead of minutes)."""
    if runner == "valgrind":
        if shutil.which("valgrind") is None:
            pytest.skip("needs valgrind (Debian: apt-get install valgrind)")
        return ["valgrind", "--tool=none", "-q"], None
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import avx2_only
    if avx2_only.unsupported_reason():
        pytest.skip(f"no AVX2-only view here: {avx2_only.unsupported_reason()}")
    return [], avx2_only.environment(cache_dir=str(tmp_path / "lib"))


@pytest.mark.parametrize("runner", ["avx2_view", pytest.param("valgrind", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", ["2-2-8-twn-row", "2-2-8-learned", "8-8-8"])
def test_onnx_logits_on_avx2_kernels_equal_the_network(tmp_path, pynative, name, runner):
    """Many users' CPUs have AVX2 and no AVX-512: ONNX Runtime then runs other integer kernels (its
    AVX2 u8 x s8 kernel adds pairs of products in saturating int16, so 8-bit codes on both sides of
    a product overflow there). Two ways to run them here, both checked to hide AVX-512 from CPUID:
    valgrind's CPU (--tool=none: its CPU, no checking), and this CPU under the AVX2-only view. The
    model's logits there equal the network's as on this machine.
    Per-call ranges (Q.K^T of two 8-bit activations), fixed ones (Q/K/V folded into their product),
    and 8-bit weights (8-bit codes times 8-bit activations)."""
    from src.onnx_export import export_onnx
    rng = np.random.RandomState(0)
    net, run = _student(QUANTS[name], rng)
    path = export_onnx(net, run, str(tmp_path / "m.onnx"))
    batches = list(_batches(rng))
    np.savez(tmp_path / "in.npz", **{f"{k}{i}": a for i, b in enumerate(batches)
                                     for k, a in zip(("ids", "mask", "seg"), b)})
    prefix, env = _avx2_runner(runner, tmp_path)
    p = subprocess.run(prefix + [sys.executable, "-c", _AVX2_WORKER, path, str(tmp_path / "in.npz"),
                                 str(tmp_path / "out.npz"), str(len(batches))],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == {"AVX2": True, "AVX512F": False}
    got = np.load(tmp_path / "out.npz")
    fwd = LogitsOnly(net)
    for i, (ids, mask, seg) in enumerate(batches):
        np.testing.assert_allclose(got[f"arr_{i}"], fwd(T(ids), T(mask), T(seg)).asnumpy(), rtol=1e-5, atol=1e-5)


def _run_graph(nodes_fn, feeds):
    """Run a small graph built by nodes_fn(g, *input names) -> output name in ONNX Runtime."""
    import onnxruntime as ort
    from onnx import helper
    from src.onnx_export import IR_VERSION, MS_DOMAIN, OPSET, _Graph
    g = _Graph()
    names = list(feeds)
    out = nodes_fn(g, *names)
    g.nodes.append(helper.make_node("Identity", [out], ["y"]))
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for n, v in feeds.items()]
    model = helper.make_model(helper.make_graph(g.nodes, "t", ins, [helper.make_empty_tensor_value_info("y")],
                                                g.inits),
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
                              ir_version=IR_VERSION)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize("ops", ["onnxruntime", "standard"])
def test_onnx_ternary_codes_and_integer_product_against_numpy(pynative, ops):
    """The stored codes are numpy TWN's, the base-3 decode restores them, and one quantized dense
    layer is the exact integer product (u - 128) @ codes^T scaled by s * alpha."""
    from src.onnx_export import _Writer, _act_quant, _int8_codes
    from src.packing import quantized_tensors
    rng = np.random.RandomState(1)
    net, run = _student(QuantConfig(), rng)
    codes = quantized_tensors(net, run.quant)
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    w = net.bert.encoder.layer[0].intermediate.dense.weight.asnumpy()  # [out, in]
    q_ref = twn(np.clip(w, -2.5, 2.5))  # alpha * codes, float64
    codes_ref, alpha_ref = np.sign(q_ref), np.abs(q_ref).max()
    np.testing.assert_array_equal(codes[name][2], codes_ref)
    np.testing.assert_allclose(codes[name][1], alpha_ref, rtol=1e-6)

    decoded = _run_graph(lambda g: _int8_codes(g, "w", codes_ref.T, 2, True), {})
    assert decoded.dtype == np.int8
    np.testing.assert_array_equal(decoded, codes_ref.T)

    x = (rng.randn(2, 7, w.shape[1]) * 1.5).astype(np.float32)  # some |x| above the clip 2.5
    cell = net.bert.encoder.layer[0].intermediate.dense
    params = {name: w, name.replace("weight", "bias"): cell.bias.asnumpy()}
    y = _run_graph(lambda g, xin: _Writer(g, params, codes, True, ops).dense([name[:-7]], xin, cell.aq)[0], {"x": x})
    m = min(np.abs(x).max(), 2.5)
    u = np.round(np.clip(x, -2.5, 2.5) * (127 / m))  # the symmetric 8-bit codes, numpy
    u_onnx = _run_graph(lambda g, xin: _act_quant(g, xin, cell.aq).u, {"x": x})
    assert u_onnx.dtype == np.uint8
    np.testing.assert_array_equal(u_onnx.astype(np.int64) - 128, u)
    acc = u.reshape(-1, w.shape[1]) @ codes_ref.T  # exact integers in float64
    expect = acc * (np.float64(m) / 127 * alpha_ref) + cell.bias.asnumpy()
    np.testing.assert_allclose(y.reshape(acc.shape), expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ops", ["onnxruntime", "standard"])
def test_onnx_eight_bit_weights_do_not_saturate(pynative, ops):
    """8-bit codes near +-127 against activations near +-127: the u8 x s8 int16 pair sum of AVX2
    kernels would saturate; the exported graph uses u8 x u8 and stays exact."""
    from src.onnx_export import _Writer
    from src.quant import ActQuant
    quant = QuantConfig(weight_bits=8, act_mode="learned")
    aq = ActQuant(quant)
    aq.clip.set_data(T(np.array([1.0], np.float32)))
    codes = np.full((4, 64), 127.0, np.float32)
    codes[1] = -127
    x = np.ones((3, 64), np.float32)
    x[1] = -1.0
    params = {"d.weight": codes, "d.bias": np.zeros(4, np.float32)}
    y = _run_graph(lambda g, xin: _Writer(g, params, {"d.weight": (8, np.float32(0.5), codes)}, True, ops)
                   .dense(["d"], xin, aq)[0], {"x": x})
    expect = (x * 1.0) @ (codes * 0.5).T  # x is exactly representable: 127 levels of 1/127
    np.testing.assert_allclose(y, expect, rtol=1e-6)


@pytest.mark.parametrize("mode", ["symmetric", "learned"])
def test_onnx_activation_codes_without_clip_above_a_lower_bound(pynative, mode):
    """Inputs known to stay above -c (GELU outputs, probabilities) are quantized without a Clip node:
    QuantizeLinear's saturation gives the clipped codes, numpy's round(clip(x, -c, c) / s)."""
    from src.onnx_export import GELU_MIN, _act_quant
    from src.quant import ActQuant
    aq = ActQuant(QuantConfig(act_mode=mode, act_clip=2.5))
    if mode == "learned":
        aq.clip.set_data(T(np.array([0.8], np.float32)))
    c = 2.5 if mode == "symmetric" else 0.8
    rng = np.random.RandomState(4)
    x = np.concatenate([rng.uniform(GELU_MIN, 0, 500), rng.uniform(0, 2 * c + 1, 500),
                        [GELU_MIN, 0.0, c, c * 1.004, 3 * c + 7]]).astype(np.float32).reshape(5, 201)
    nodes = []

    def build(g, xin):
        qa = _act_quant(g, xin, aq, lower=GELU_MIN)
        nodes.extend(n.op_type for n in g.nodes)
        return qa.u
    u = _run_graph(build, {"x": x}).astype(np.int64) - 128
    assert "Clip" not in nodes
    m = min(np.abs(x).max(), c) if mode == "symmetric" else c
    s = np.float32(m) / np.float32(127)
    expect = np.round(np.clip(x, -c, c) / s)  # numpy rounds half to even, as QuantizeLinear does
    np.testing.assert_array_equal(u, expect)
    assert u.max() == 127 and (x > c).any()  # the saturated side was exercised


@pytest.mark.parametrize("mode", ["learned", "calibrated"])
def test_onnx_activation_codes_of_fixed_ranges_clip_both_ends(pynative, mode):
    """Fixed ranges (learned clip, calibrated range): values far beyond and just beyond -c and +c
    take codes -127 and 127, never QuantizeLinear's extra -128: numpy's round(clip(x, -c, c) / s)."""
    from src.onnx_export import _act_quant
    from src.quant import ActQuant
    c = 0.8
    aq = ActQuant(QuantConfig(act_mode="learned" if mode == "learned" else "symmetric", act_clip=2.5))
    if mode == "learned":
        aq.clip.set_data(T(np.array([c], np.float32)))
    rng = np.random.RandomState(5)
    x = np.concatenate([rng.uniform(-3 * c, 3 * c, 995),
                        [-c * 1.0035, -c * 1.01, -50.0, c * 1.01, 50.0]]).astype(np.float32).reshape(5, 200)

    def build(g, xin):
        if mode == "calibrated":
            g.act_names, g.act_ranges = {id(aq): "aq"}, {"aq": c}
        return _act_quant(g, xin, aq).u
    out = _run_graph(build, {"x": x})
    assert out.dtype == np.uint8
    u = out.astype(np.int64) - 128
    s = np.float32(c) / np.float32(127)
    expect = np.round(np.clip(x, -c, c) / s)
    np.testing.assert_array_equal(u, expect)
    assert u.min() == -127 and u.max() == 127 and (x < -c * 127.5 / 127).any()


def test_onnx_runs_without_mindspore(tmp_path, pynative):
    """A deployed process needs onnxruntime only: loading and running the model imports no MindSpore."""
    from src.onnx_export import export_onnx
    net, run = _student(QuantConfig(), np.random.RandomState(2), num_labels=2, task="sst-2")
    path = export_onnx(net, run, str(tmp_path / "m.onnx"))
    code = ("import sys, numpy as np; from src.deploy import OnnxPredictor; m = OnnxPredictor(sys.argv[1]); "
            "z = np.zeros((2, 6), np.int32); print(m(z + 3, z + 1, z).shape); "
            "assert not any(k.startswith('mindspore') for k in sys.modules), 'mindspore imported'")
    p = subprocess.run([sys.executable, "-c", code, path], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "(2, 2)"


def test_sessions_sharing_the_environment_arena_agree_with_a_plain_session(tmp_path, pynative):
    """session_options' shared arena (registered once per process): two models loaded side by side
    and run at several shapes in turn give exactly a plain session's outputs (a buffer handed to
    two sessions, or kept from a larger shape, would show here)."""
    from src.onnx_export import export_onnx
    paths = []
    for seed, name in ((2, "a.onnx"), (3, "b.onnx")):
        net, run = _student(QuantConfig(act_mode="learned"), np.random.RandomState(seed), num_labels=2, task="sst-2")
        paths.append(export_onnx(net, run, str(tmp_path / name)))
    code = """if True:
        import sys, numpy as np, onnxruntime as ort
        from src.deploy import onnx_feed, session_options
        shared = [ort.InferenceSession(p, session_options(), providers=["CPUExecutionProvider"]) for p in sys.argv[1:]]
        plain = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]) for p in sys.argv[1:]]
        rng = np.random.RandomState(0)
        for b, s in ((4, 32), (1, 5), (3, 17), (4, 32), (2, 9)):
            ids = rng.randint(1, 60, (b, s)).astype(np.int32)  # the tiny vocabulary: 60
            mask = (np.arange(s)[None, :] < rng.randint(1, s + 1, (b, 1))).astype(np.int32)
            feed = onnx_feed(ids, mask, np.zeros_like(ids))
            for a, p in zip(shared, plain):
                np.testing.assert_array_equal(a.run(None, feed)[0], p.run(None, feed)[0])
        print("ok")
    """
    p = subprocess.run([sys.executable, "-c", code, *paths], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "ok"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny SST-2 student (LAT, so the frozen MINDIR must drop lat_d), its records and its exports."""
    import export
    from src.glue import convert
    d = tmp_path_factory.mktemp("deploy")
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.RandomState(3)
    cfg = tiny_config(2)
    import dataclasses
    cfg = dataclasses.replace(cfg, vocab_size=30522, max_position_embeddings=64)  # the package's vocabulary
    quant = QuantConfig(ternarizer="lat")
    net = BertForSequenceClassification(cfg, quant)
    randomize(net, rng, W_SCALE)
    for n, p in net.parameters_and_names():
        if n.endswith("lat_d"):
            p.set_data(T(np.abs(rng.randn(*p.shape)).astype(np.float32) + 0.1))
    run = RunConfig(task="sst-2", model=cfg, quant=quant)
    os.makedirs(d / "student")
    save_network(net, str(d / "student" / "s.ckpt"), run)
    with open(VOCAB, "rb") as f, open(d / "student" / "vocab.txt", "wb") as g:
        g.write(f.read())
    glue = synthetic_glue(str(d / "glue"), n_train=8, n_dev=37)
    convert("sst-2", glue, VOCAB, str(d / "data"), 24, splits=("dev",), progress=False)
    written = export.main(["--checkpoint", str(d / "student" / "s.ckpt"), "--output", str(d / "exp" / "s")])
    return d, written


def test_export_writes_every_artifact(exported):
    d, written = exported
    names = sorted(os.path.basename(p) for p in written)
    assert names == ["s.json", "s.manifest.json", "s.mindir", "s.onnx", "s.size.json", "s.tbq", "vocab.txt"]
    manifest = json.load(open(d / "exp" / "s.manifest.json"))
    for f in ("s.mindir", "s.onnx", "s.tbq", "vocab.txt"):
        assert manifest["files"][f]["bytes"] == os.path.getsize(d / "exp" / f)
    # ternary codes at 1.6 bits: the ONNX file is within 2x the packed file, far below fp32
    size = json.load(open(d / "exp" / "s.size.json"))
    assert os.path.getsize(d / "exp" / "s.onnx") < 2 * size["packed_bytes"] < size["fp32_bytes"]


def test_frozen_mindir_equals_eval_exactly_and_drops_lat(exported, graph):
    d, _ = exported
    net, run = load_network(str(d / "student" / "s.ckpt"))
    net.set_train(False)
    fwd = LogitsOnly(net)
    mindir = load_predictor(str(d / "exp" / "s.mindir"))
    assert mindir.run == run
    rng = np.random.RandomState(4)
    for b, s in ((4, 12), (1, 7), (3, 24)):
        ids, mask, seg = tiny_batch(rng, b=b, s=s, vocab=30522)
        np.testing.assert_array_equal(mindir(ids, mask, seg), fwd(T(ids), T(mask), T(seg)).asnumpy())
    # LAT's curvature (a second fp32 copy of every quantized weight) is not in the frozen file
    lat_bytes = sum(p.asnumpy().nbytes for n, p in net.parameters_and_names() if n.endswith("lat_d"))
    weights = sum(p.asnumpy().nbytes for n, p in net.parameters_and_names() if not n.endswith("lat_d"))
    assert lat_bytes > 0.5 * weights
    assert os.path.getsize(d / "exp" / "s.mindir") < weights + 0.2 * lat_bytes


def test_eval_py_on_every_file_kind(exported):
    import eval as eval_py
    d, _ = exported
    results = {}
    for f in ("student/s.ckpt", "exp/s.tbq", "exp/s.mindir", "exp/s.onnx"):
        out = str(d / (f.replace("/", "_") + ".json"))
        results[f] = eval_py.main(["--checkpoint", str(d / f), "--data_dir", str(d / "data"), "--output_file", out])
        assert json.load(open(out))["acc"] == results[f]["acc"]
    ref = results["student/s.ckpt"]
    assert ref["examples"] == 37
    for f, r in results.items():
        assert r["acc"] == ref["acc"], f


def test_predict_py_equals_eval_outputs(exported, tmp_path):
    import predict
    from src.glue import read_examples
    from src.config import get_task
    from src.trainer import predict_records
    d, _ = exported
    examples = read_examples(str(d / "glue" / "SST-2" / "dev.tsv"), get_task("sst-2"))
    src = tmp_path / "in.tsv"
    src.write_text("".join(ex.text_a + "\n" for ex in examples))
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"text": ex.text_a}) + "\n" for ex in examples))
    for model in ("exp/s.onnx", "exp/s.tbq"):
        m = load_predictor(str(d / model))
        logits, _ = predict_records(m, str(d / "data"), "sst-2", 32, "mindrecord")
        expect = [("0", "1")[k] for k in np.argmax(logits, axis=-1)]
        for inp in (src, jsonl):
            out = tmp_path / "pred.txt"
            # the records' length (a trained checkpoint's config says it; this hand-made one has no train part)
            predict.main(["--model", str(d / model), "--input", str(inp), "--output", str(out),
                          "--max_seq_length", "24"])
            assert out.read_text().splitlines() == expect, (model, inp)


def test_predict_py_names_a_malformed_line_and_writes_nothing(exported, tmp_path):
    import predict
    from src.glue import DataError
    d, _ = exported
    out = tmp_path / "pred.txt"
    cases = {"a.tsv": (b"fine film\ntoo\tmany\tfields\n", "a.tsv:2: 3 tab-separated"),
             "b.tsv": (b"fine film\n\nok\n", "b.tsv:2: empty line"),
             "c.tsv": (b"fine film\nbad \xff byte\n", "c.tsv:2: not valid UTF-8"),
             "d.jsonl": (b'{"text": "ok"}\n{"txt": "no"}\n', "d.jsonl:2: expected a key"),
             "e.tsv": (b"one text\na\tpair\n", "e.tsv:2: a pair"),
             # an SST-2 model given pairs: numbers without meaning (and a pair model given single texts)
             "f.tsv": (b"fine film\tgood\nbad\tfilm\n", "f.tsv: the model is a sst-2 model, which reads one text")}
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=msg):
            predict.main(["--model", str(d / "exp" / "s.onnx"), "--input", str(tmp_path / name), "--output", str(out)])
        assert not out.exists()
    from src.predict_io import check_task_shape
    with pytest.raises(DataError, match="x.tsv: the model is a sts-b model, which reads sentence pairs"):
        check_task_shape([("one text", None)], "sts-b", True, "x.tsv")
    check_task_shape([("a", "b")], "sts-b", True, "x.tsv")


def test_damaged_deployment_files_are_refused_with_their_names(exported, tmp_path):
    d, _ = exported
    for name in ("s.onnx", "s.mindir"):
        good = (d / "exp" / name).read_bytes()
        path = tmp_path / name
        for f in ("s.json", "s.manifest.json"):
            (tmp_path / f).write_bytes((d / "exp" / f).read_bytes())
        mid = len(good) // 2
        for damaged in (good[:mid], good[:mid] + bytes([good[mid] ^ 0x10]) + good[mid + 1:]):
            path.write_bytes(damaged)
            with pytest.raises(ModelFileError, match=str(path).replace(".", r"\.")):
                load_predictor(str(path))
    (tmp_path / "x.onnx").write_bytes(b"not a model at all" * 8)
    with pytest.raises(ModelFileError, match="x.onnx"):
        load_predictor(str(tmp_path / "x.onnx"))


def test_onnx_all_zero_activation_gives_zero_like_training(pynative):
    """The ONNX graph has no m >= 1e-30 guard: an all-zero input then has scale 0, and every consumer
    multiplies by that scale, so the result is exactly what training computes (zero codes)."""
    from src.onnx_export import _Writer, _dequant, _act_quant
    from src.quant import ActQuant
    aq = ActQuant(QuantConfig())
    x = np.zeros((2, 3, 8), np.float32)
    np.testing.assert_array_equal(_run_graph(lambda g, xin: _dequant(g, _act_quant(g, xin, aq)), {"x": x}), x)
    codes = np.sign(np.random.RandomState(0).randn(4, 8)).astype(np.float32)
    params = {"d.weight": codes, "d.bias": np.arange(4, dtype=np.float32)}
    y = _run_graph(lambda g, xin: _Writer(g, params, {"d.weight": (2, np.float32(0.3), codes)}, True)
                   .dense(["d"], xin, aq)[0], {"x": x})
    np.testing.assert_array_equal(y, np.broadcast_to(params["d.bias"], (2, 3, 4)))


def test_export_from_a_packed_file_reuses_its_codes(exported, graph):
    """export.py --checkpoint x.tbq: the ONNX and .tbq written from the packed file are byte-identical to
    those written from the checkpoint (the codes are the file's, nothing is ternarized again), and its
    frozen MINDIR gives the same logits."""
    import export
    d, _ = exported
    export.main(["--checkpoint", str(d / "exp" / "s.tbq"), "--output", str(d / "again" / "s")])
    for ext in ("onnx", "tbq"):
        assert (d / "again" / f"s.{ext}").read_bytes() == (d / "exp" / f"s.{ext}").read_bytes(), ext
    ids, mask, seg = tiny_batch(np.random.RandomState(6), b=3, s=11, vocab=30522)
    np.testing.assert_array_equal(load_predictor(str(d / "again" / "s.mindir"))(ids, mask, seg),
                                  load_predictor(str(d / "exp" / "s.mindir"))(ids, mask, seg))


def test_float_onnx_holds_weights_that_quantize_dynamic_quantizes(tmp_path, pynative):
    """The benchmark's int8 alternative: every dense weight of the fp32 ONNX model (the fused Q/K/V
    one too) must be an initializer, or quantize_dynamic silently leaves that product in fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from src.onnx_export import export_onnx
    rng = np.random.RandomState(0)
    net, run = _student(QuantConfig.full_precision(), rng)
    src = export_onnx(net, run, str(tmp_path / "fp32.onnx"))
    dst = str(tmp_path / "int8.onnx")
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
    m = onnx.load(dst)
    layers = run.model.num_hidden_layers
    q_matmuls = [n for n in m.graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    # per layer: Q/K/V, attention output, FFN in, FFN out; plus the pooler and the classifier
    assert len(q_matmuls) == 4 * layers + 2, [n.op_type for n in m.graph.node]
    assert not [n for n in onnx.load(src).graph.node if n.op_type == "Concat"]
    # the fused matrix is the three concatenated: the float model still equals the network
    ids, mask, seg = tiny_batch(rng, b=2, s=9)
    np.testing.assert_allclose(OnnxPredictor(src)(ids, mask, seg),
                               LogitsOnly(net)(T(ids), T(mask), T(seg)).asnumpy(), rtol=1e-5, atol=1e-5)


def _act_quant_names(net):
    from src.quant import ActQuant
    return {n: c for n, c in net.cells_and_names() if isinstance(c, ActQuant)}


def test_calibrated_ranges_are_the_largest_per_batch_range(pynative):
    """calibrate() gives every symmetric quantizer the largest range it computes over the batches:
    min(max|x|, c), or max x for probabilities, read here from the MindSpore network's own inputs
    to each quantizer (forward hooks), not from the ONNX graph."""
    from src.onnx_export import calibrate
    from src.packing import quantized_tensors
    rng = np.random.RandomState(7)
    net, run = _student(QuantConfig(act_clip=1.5), rng)
    cells = _act_quant_names(net)
    seen = {n: [] for n in cells}
    for name, cell in cells.items():
        def hook(c, inputs, name=name):
            x = inputs[0].asnumpy()
            seen[name].append(x.max() if c.fq.bounded else min(np.abs(x).max(), c.fq.clip))
        cell.register_forward_pre_hook(hook)
    batches = list(_batches(rng))
    fwd = LogitsOnly(net)
    for ids, mask, seg in batches:
        fwd(T(ids), T(mask), T(seg))
    ranges, n = calibrate(net, run, quantized_tensors(net, run.quant), batches)
    assert n == len(batches) and sorted(ranges) == sorted(cells)
    expect = {name: max(v) for name, v in seen.items()}
    for name in cells:
        np.testing.assert_allclose(ranges[name], expect[name], rtol=1e-6, err_msg=name)
    # both sides of the clip are exercised: some ranges are clipped at c, some are below it
    vals = np.array([expect[n] for n in cells if not cells[n].fq.bounded])
    assert (vals == np.float32(1.5)).any() and (vals < 1.4).any(), vals


def test_calibrated_onnx_equals_a_network_with_those_fixed_ranges(tmp_path, pynative):
    """The ONNX model with calibrated ranges computes what the network computes with each quantizer's
    range fixed there: the learned-range network (act_mode learned, clip = the calibrated range)."""
    from src.onnx_export import calibrate, export_onnx, read_onnx
    from src.packing import quantized_tensors
    rng = np.random.RandomState(8)
    net, run = _student(QuantConfig(), rng)
    codes = quantized_tensors(net, run.quant)
    ranges, _ = calibrate(net, run, codes, list(_batches(rng)))
    path = export_onnx(net, run, str(tmp_path / "c.onnx"), codes=codes, act_ranges=ranges, calibration="test")
    model, _ = read_onnx(path)
    assert not [n for n in model.graph.node if n.op_type in ("ReduceMax", "Abs")]  # no per-call ranges
    meta = json.loads({p.key: p.value for p in model.metadata_props}["calibration"])
    assert meta == {"source": "test", "ranges": ranges}
    twin = BertForSequenceClassification(run.model, QuantConfig(act_mode="learned"))
    src = dict(net.parameters_and_names())
    names = _act_quant_names(twin)
    for n, p in twin.parameters_and_names():
        if n.endswith(".clip"):
            p.set_data(T(np.array([ranges[n[:-len(".clip")]]], np.float32)))
        else:
            p.set_data(src[n].data.copy())
    assert len(names) == len(ranges)
    twin.set_train(False)
    onnx_model, fwd = OnnxPredictor(path), LogitsOnly(twin)
    for ids, mask, seg in _batches(np.random.RandomState(9)):  # new inputs: ranges exceeded in places
        np.testing.assert_allclose(onnx_model(ids, mask, seg), fwd(T(ids), T(mask), T(seg)).asnumpy(),
                                   rtol=1e-5, atol=1e-5)
    # and the calibrated ranges matter: the per-call model gives other logits on a batch of one
    per_call = OnnxPredictor(export_onnx(net, run, str(tmp_path / "p.onnx"), codes=codes))
    assert np.abs(per_call(ids[:1], mask[:1], seg[:1]) - onnx_model(ids[:1], mask[:1], seg[:1])).max() > 1e-4


def test_calibration_is_refused_where_ranges_are_fixed_or_float(pynative):
    from src.onnx_export import OnnxExportError, calibrate
    from src.packing import quantized_tensors
    rng = np.random.RandomState(10)
    for quant, words in ((QuantConfig(act_mode="learned"), "learned"), (QuantConfig(act_bits=32), "float")):
        net, run = _student(quant, rng)
        with pytest.raises(OnnxExportError, match=words):
            calibrate(net, run, quantized_tensors(net, run.quant), list(_batches(rng)))


def test_export_py_calibrated_models_give_batch_independent_predictions(exported, graph):
    """export.py --calibration_data: the ONNX model's and the MINDIR's predictions no longer depend on
    the rest of the batch (a sentence alone and inside the dev set score the same), unlike the
    per-call models'; the calibrated MINDIR computes what the calibrated ONNX model computes."""
    import export
    d, _ = exported
    with pytest.raises(SystemExit):  # calibration is for the ONNX and MINDIR models: refused without them
        export.parse_args(["--checkpoint", str(d / "student" / "s.ckpt"), "--output", str(d / "x"),
                           "--file_format", "NONE", "--calibration_data", str(d / "data")])
    written = export.main(["--checkpoint", str(d / "student" / "s.ckpt"), "--output", str(d / "cal" / "s"),
                           "--file_format", "ONNX", "MINDIR", "--no_packed", "--calibration_data",
                           str(d / "data"), "--calibration_split", "dev", "--calibration_batches", "1"])
    assert sorted(os.path.basename(p) for p in written) == ["s.json", "s.manifest.json", "s.mindir", "s.onnx",
                                                            "vocab.txt"]
    from src.onnx_export import read_onnx
    from src.trainer import predict_records
    model, _ = read_onnx(str(d / "cal" / "s.onnx"))
    source = json.loads({p.key: p.value for p in model.metadata_props}["calibration"])["source"]
    assert source.startswith("1 batch of 32 from the dev split of ")
    assert json.load(open(d / "cal" / "s.manifest.json"))["calibration"] == source
    outputs = {}
    for name, independent in (("cal/s.onnx", True), ("cal/s.mindir", True), ("exp/s.onnx", False),
                              ("exp/s.mindir", False)):
        m = load_predictor(str(d / name))
        whole, _ = predict_records(m, str(d / "data"), "sst-2", 37, "mindrecord")
        alone, _ = predict_records(m, str(d / "data"), "sst-2", 1, "mindrecord")
        diff = np.abs(whole - alone).max()
        assert (diff < 1e-5) if independent else (diff > 1e-4), (name, diff)
        assert m.fixed_ranges is independent, name  # what predict.py's --dynamic_length hint relies on
        outputs[name] = whole
    np.testing.assert_allclose(outputs["cal/s.mindir"], outputs["cal/s.onnx"], rtol=1e-5, atol=1e-5)


def test_export_py_refused_calibration_writes_nothing(exported, tmp_path):
    """A calibration that cannot be done is refused before any file is written, whatever the order of
    --file_format: a missing split is named, and a learned-range student (ranges fixed already) too."""
    import export
    from src import cli
    d, _ = exported
    net, run = load_network(str(d / "student" / "s.ckpt"))
    learned = RunConfig(task=run.task, model=run.model, quant=QuantConfig(act_mode="learned"))
    lnet = BertForSequenceClassification(run.model, learned.quant)
    save_network(lnet, str(tmp_path / "learned.ckpt"), learned)
    cases = [(str(d / "student" / "s.ckpt"), "train", "has no train split"),  # the fixture converted dev only
             (str(tmp_path / "learned.ckpt"), "dev", "fixed already")]
    for i, (ckpt, split, words) in enumerate(cases):
        out = tmp_path / f"o{i}"
        with pytest.raises(ValueError, match=words):
            export.main(["--checkpoint", ckpt, "--output", str(out / "s"), "--file_format", "MINDIR", "ONNX",
                         "--calibration_data", str(d / "data"), "--calibration_split", split])
        assert not out.exists() or not os.listdir(out), os.listdir(out)
    assert cli.run_main(lambda: export.main(["--checkpoint", cases[1][0], "--output", str(tmp_path / "o9" / "s"),
                                             "--calibration_data", str(d / "data"),
                                             "--calibration_split", "dev"]), "export") == 2


def test_deploy_accuracy_alternatives_are_the_teacher_and_its_int8_files(exported, graph):
    """benchmarks/deploy_accuracy.py --teacher: the fp32 ONNX of the teacher scores exactly what the
    MindSpore network scores on the same records (metrics computed here by hand from its logits), and
    ONNX Runtime's two int8 files are really quantized (other logits, a quarter of the size) yet close."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from deploy_accuracy import alternatives
    from src.glue import convert
    from src.trainer import predict_records
    d, _ = exported
    rng = np.random.RandomState(11)
    import dataclasses
    cfg = dataclasses.replace(tiny_config(2), vocab_size=30522, max_position_embeddings=64)
    run = RunConfig(task="sst-2", model=cfg, quant=QuantConfig.full_precision())
    net = BertForSequenceClassification(cfg, run.quant)
    randomize(net, rng, W_SCALE)
    os.makedirs(d / "teacher", exist_ok=True)
    save_network(net, str(d / "teacher" / "t.ckpt"), run)
    data = str(d / "data-train")
    glue = synthetic_glue(str(d / "glue-alt"), n_train=40, n_dev=37)  # a train split of one calibration batch
    convert("sst-2", glue, VOCAB, data, 24, progress=False)
    got = alternatives(str(d / "teacher" / "t.ckpt"), data, str(d / "alt"), n_batches=1, batch_size=32)["files"]
    net.set_train(False)
    fwd = LogitsOnly(net)
    logits, labels = predict_records(lambda *c: fwd(*(ms.Tensor(x) for x in c)).asnumpy(), data, "sst-2", 32,
                                     "mindrecord")
    assert got["teacher fp32 ONNX"]["acc"] == pytest.approx(float(np.mean(logits.argmax(-1) == labels)), abs=1e-12)
    fp32 = got["teacher fp32 ONNX"]
    assert fp32["max_logit_diff_from_fp32"] == 0.0
    for kind in ("teacher int8 ONNX (dynamic)", "teacher int8 ONNX (static)"):
        assert 0.0 < got[kind]["max_logit_diff_from_fp32"] < 0.05, kind
        assert got[kind]["bytes"] < 0.35 * fp32["bytes"], kind


def test_export_without_a_vocabulary_says_so(exported, tmp_path, caplog):
    import logging
    import shutil
    from src import api
    d, _ = exported
    for f in ("s.ckpt", "s.json"):  # the checkpoint and its config, not its folder's vocab.txt
        shutil.copy(d / "student" / f, tmp_path / f)
    with caplog.at_level(logging.WARNING):
        written = api.export(str(tmp_path / "s.ckpt"), str(tmp_path / "out" / "s"), formats=())
    assert "no vocab.txt beside" in caplog.text and "--vocab_file" in caplog.text
    assert not (tmp_path / "out" / "vocab.txt").exists() and all(not p.endswith("vocab.txt") for p in written)
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # beside the exported files, it is read again from there
        api.export(str(tmp_path / "out" / "s.tbq"), str(tmp_path / "again" / "s"), formats=())
    assert "no vocab.txt" in caplog.text
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        api.export(str(d / "student" / "s.ckpt"), str(tmp_path / "with" / "s"), formats=())
    assert "no vocab.txt" not in caplog.text and (tmp_path / "with" / "vocab.txt").is_file()


def test_predict_py_resumes_an_interrupted_run(exported, tmp_path):
    """An interrupted predict.py keeps its finished batches in OUTPUT.partial; --resume continues at
    the first missing batch and ends with the uninterrupted run's file, and nothing else resumes."""
    import predict
    from src.glue import read_examples
    from src.config import get_task
    d, _ = exported
    examples = read_examples(str(d / "glue" / "SST-2" / "dev.tsv"), get_task("sst-2"))
    inp = tmp_path / "in.tsv"
    inp.write_text("".join(ex.text_a + "\n" for ex in examples))
    model = str(d / "exp" / "s.onnx")
    base = ["--model", model, "--input", str(inp), "--max_seq_length", "24", "--batch_size", "5"]
    whole = tmp_path / "whole.txt"
    predict.main(base + ["--output", str(whole)])
    want = whole.read_text().splitlines()
    assert len(want) == len(examples) > 20 and set(want) <= {"0", "1"}
    assert not (tmp_path / "whole.txt.partial").exists() and not (tmp_path / "whole.txt.partial.json").exists()

    out = tmp_path / "out.txt"
    partial = tmp_path / "out.txt.partial"
    predict.main(base + ["--output", str(out), "--stop_after", "3"])
    assert not out.exists() and partial.read_text().splitlines() == want[:15]
    # a killed run may leave lines of an unfinished batch and half a line: both are computed again
    with open(partial, "ab") as f:
        f.write(b"X\nX\n1")
    with pytest.raises(FileExistsError, match="pass --resume"):
        predict.main(base + ["--output", str(out)])
    with pytest.raises(ValueError, match=r"differs in batch_size \(then 5, now 4\)"):
        predict.main(base[:-1] + ["4", "--output", str(out), "--resume"])
    with pytest.raises(ValueError, match="differs in model_sha256"):  # the same student, another file
        predict.main(["--model", str(d / "exp" / "s.tbq")] + base[2:] + ["--output", str(out), "--resume"])
    moved = tmp_path / "moved.onnx"  # the same bytes elsewhere: the same run
    moved.write_bytes(open(model, "rb").read())
    base[1] = str(moved)
    base += ["--vocab_file", str(d / "exp" / "vocab.txt")]
    predict.main(base + ["--output", str(out), "--resume", "--stop_after", "1"])  # one more batch: 20 lines
    assert partial.read_text().splitlines() == want[:20]
    predict.main(base + ["--output", str(out), "--resume"])
    assert out.read_text().splitlines() == want
    assert not partial.exists() and not (tmp_path / "out.txt.partial.json").exists()
    with pytest.raises(FileNotFoundError, match="no interrupted run"):
        predict.main(base + ["--output", str(out), "--resume"])
    with pytest.raises(ValueError, match="standard output"):
        predict.main(base + ["--resume"])


def test_prediction_sink_edges(tmp_path):
    """predict.py's output sink: a run stopped before its .partial existed resumes from nothing; a
    damaged sidecar and stray .partial files are named, never overwritten."""
    from src.predict_io import PredictionSink
    out = str(tmp_path / "o.txt")
    sink = PredictionSink(out, {"a": 1}, 2, 5)
    sink.write(["x", "y"])
    sink.close()
    os.remove(out + ".partial")
    sink = PredictionSink(out, {"a": 1}, 2, 5, resume=True)
    assert sink.done == 0
    for lines in (["1", "2"], ["3", "4"], ["5"]):
        sink.write(lines)
    sink.finish()
    assert open(out).read() == "1\n2\n3\n4\n5\n" and os.listdir(tmp_path) == ["o.txt"]
    # every line of the last (short) batch written, the rename not done: nothing to compute again
    PredictionSink(out, {"a": 1}, 2, 3).write(["a", "b", "c"])
    assert PredictionSink(out, {"a": 1}, 2, 3, resume=True).done == 3
    with open(out + ".partial.json", "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match=r"o.txt.partial.json is damaged"):
        PredictionSink(out, {"a": 1}, 2, 3, resume=True)
    os.remove(out + ".partial.json")
    with pytest.raises(FileExistsError, match="not written by predict.py"):
        PredictionSink(out, {"a": 1}, 2, 3)
    assert open(out + ".partial").read() == "a\nb\nc\n"


def test_predict_py_sort_by_length_keeps_input_order(exported, tmp_path):
    """--sort_by_length (fixed-range models only): batches of similar length, outputs in input order,
    the labels eval.py's padded batches give; resumable by window; refused for a per-call model."""
    import export
    import predict
    from src.glue import read_examples
    from src.config import get_task
    from src.trainer import predict_records
    d, _ = exported
    export.main(["--checkpoint", str(d / "student" / "s.ckpt"), "--output", str(tmp_path / "cal" / "s"),
                 "--file_format", "ONNX", "--no_packed", "--calibration_data", str(d / "data"),
                 "--calibration_split", "dev", "--calibration_batches", "1"])
    model = str(tmp_path / "cal" / "s.onnx")
    logits, _ = predict_records(load_predictor(model), str(d / "data"), "sst-2", 32, "mindrecord")
    want = [("0", "1")[k] for k in np.argmax(logits, axis=-1)]
    assert {"0", "1"} <= set(want)  # both labels: a line out of place would show
    examples = read_examples(str(d / "glue" / "SST-2" / "dev.tsv"), get_task("sst-2"))
    lengths = {len(ex.text_a.split()) for ex in examples}
    assert len(lengths) > 5  # sorting moves examples around
    inp = tmp_path / "in.tsv"
    inp.write_text("".join(ex.text_a + "\n" for ex in examples))
    base = ["--model", model, "--input", str(inp), "--max_seq_length", "24", "--batch_size", "4",
            "--sort_by_length", "--sort_window", "8"]
    out = tmp_path / "sorted.txt"
    predict.main(base + ["--output", str(out)])
    assert out.read_text().splitlines() == want
    out2 = tmp_path / "resumed.txt"
    predict.main(base + ["--output", str(out2), "--stop_after", "2"])
    assert (tmp_path / "resumed.txt.partial").read_text().splitlines() == want[:16]
    predict.main(base + ["--output", str(out2), "--resume"])
    assert out2.read_text().splitlines() == want
    with pytest.raises(SystemExit):  # a window without sorting: refused, not ignored
        predict.parse_args(["--model", model, "--input", str(inp), "--sort_window", "8"])
    with pytest.raises(ValueError, match="searches its activation ranges per batch"):
        predict.main(["--model", str(d / "exp" / "s.onnx")] + base[2:] + ["--output", str(tmp_path / "x.txt")])
