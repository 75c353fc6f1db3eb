"""The packed 2-bit file: exact round trips, eval from packed == eval from checkpoint, MINDIR, corruption."""
import hashlib
import json
import os
import struct

import numpy as np
import pytest
import mindspore as ms

from conftest import randomize, tiny_batch, tiny_config
from src.checkpoint import load_network, save_network
from src.config import QuantConfig, RunConfig
from src.packing import PackedFileError, load_packed, pack_ternary, save_packed, size_report, unpack_ternary
from src.tinybert_model import BertForSequenceClassification, LogitsOnly

T = ms.Tensor


@pytest.mark.parametrize("n", [1, 3, 4, 5, 6, 7, 13, 1001, 30522 * 3 + 2])
def test_ternary_pack_roundtrip_awkward_sizes(n):
    codes = np.random.RandomState(n % 97).randint(-1, 2, n).astype(np.float32)
    data = pack_ternary(codes)
    assert len(data) == (n + 4) // 5  # 5 codes per byte
    np.testing.assert_array_equal(unpack_ternary(data, n), codes)


def _student(tmp_path, quant, rng):
    cfg = tiny_config(3)
    net = BertForSequenceClassification(cfg, quant)
    randomize(net, rng, 0.3)
    run = RunConfig(task="mnli", model=cfg, quant=quant)
    save_network(net, str(tmp_path / "s.ckpt"), run)
    return run


@pytest.mark.parametrize("quant", [QuantConfig(), QuantConfig(weight_bits=8, embedding_bits=8),
                                   QuantConfig(ternarizer="lat", embedding_granularity="layer",
                                               act_mode="asymmetric_ema"),
                                   QuantConfig(act_mode="learned")],
                         ids=["2-2-8-twn-row", "8-8-8", "2-2-8-lat-layer-ema", "2-2-8-learned-clips"])
def test_eval_from_packed_equals_eval_from_checkpoint(tmp_path, graph, quant):
    rng = np.random.RandomState(0)
    run = _student(tmp_path, quant, rng)
    net, _ = load_network(str(tmp_path / "s.ckpt"))
    if quant.ternarizer == "lat":  # non-trivial curvature and EMA state
        for n, p in net.parameters_and_names():
            if n.endswith("lat_d"):
                p.set_data(T(np.abs(rng.randn(*p.shape)).astype(np.float32) + 0.1))
            if n.endswith("ema_lo"):
                p.set_data(T(np.float32(-1.7)))
    if quant.act_mode == "learned":  # clips away from their initial value
        for n, p in net.parameters_and_names():
            if n.endswith(".clip"):
                p.set_data(T(rng.uniform(0.5, 3.0, size=(1,)).astype(np.float32)))
    save_packed(net, run, str(tmp_path / "s.tbq"))
    packed, prun = load_packed(str(tmp_path / "s.tbq"))
    assert prun.quant == run.quant
    ids, mask, seg = tiny_batch(rng, b=4, s=12)
    net.set_train(False)
    packed.set_train(False)
    a = LogitsOnly(net)(T(ids), T(mask), T(seg)).asnumpy()
    b = LogitsOnly(packed)(T(ids), T(mask), T(seg)).asnumpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() > 0


def test_fp16_side_parameters_and_size(tmp_path, graph):
    run = _student(tmp_path, QuantConfig(), np.random.RandomState(1))
    net, _ = load_network(str(tmp_path / "s.ckpt"))
    save_packed(net, run, str(tmp_path / "a.tbq"))
    save_packed(net, run, str(tmp_path / "b.tbq"), side_dtype="fp16")
    ra, rb = size_report(net, str(tmp_path / "a.tbq")), size_report(net, str(tmp_path / "b.tbq"))
    assert rb["packed_bytes"] < ra["packed_bytes"] < ra["fp32_bytes"]
    packed, _ = load_packed(str(tmp_path / "b.tbq"))
    ln = net.bert.embeddings.LayerNorm.weight.asnumpy()
    np.testing.assert_array_equal(packed.bert.embeddings.LayerNorm.weight.asnumpy(),
                                  ln.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("act_mode", ["symmetric", "learned"])
def test_mindir_keeps_quantization_and_equals_eval(tmp_path, graph, act_mode):
    rng = np.random.RandomState(2)
    _student(tmp_path, QuantConfig(act_mode=act_mode), rng)
    net, _ = load_network(str(tmp_path / "s.ckpt"))
    net.set_train(False)
    fwd = LogitsOnly(net)
    dyn = [T(shape=[None, None], dtype=ms.int32) for _ in range(3)]
    ms.export(fwd, *dyn, file_name=str(tmp_path / "m"), file_format="MINDIR")
    graph_cell = ms.nn.GraphCell(ms.load(str(tmp_path / "m.mindir")))
    float_net = BertForSequenceClassification(net.config, QuantConfig.full_precision())
    src = dict(net.parameters_and_names())
    for n, q in float_net.parameters_and_names():
        q.set_data(src[n].data.copy())
    float_net.set_train(False)
    for b, s in ((4, 12), (2, 7)):  # dynamic batch and length
        ids, mask, seg = tiny_batch(rng, b=b, s=s)
        expect = fwd(T(ids), T(mask), T(seg)).asnumpy()
        got = graph_cell(T(ids), T(mask), T(seg)).asnumpy()
        np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)
        # ... and the quantization is really in the graph: the float network differs
        assert np.abs(LogitsOnly(float_net)(T(ids), T(mask), T(seg)).asnumpy() - got).max() > 1e-3


def _rewrite(path, mutate_header=None, version=None):
    raw = open(path, "rb").read()[:-32]
    magic, ver, hlen = struct.unpack_from("<4sIQ", raw, 0)
    header = json.loads(raw[16:16 + hlen])
    if mutate_header:
        mutate_header(header)
    hb = json.dumps(header, sort_keys=True).encode()
    body = struct.pack("<4sIQ", magic, version or ver, len(hb)) + hb + raw[16 + hlen:]
    with open(path, "wb") as f:
        f.write(body + hashlib.sha256(body).digest())


def test_corrupt_truncated_foreign_files_are_refused(tmp_path, graph):
    run = _student(tmp_path, QuantConfig(), np.random.RandomState(3))
    net, _ = load_network(str(tmp_path / "s.ckpt"))
    path = str(tmp_path / "s.tbq")
    save_packed(net, run, path)
    good = open(path, "rb").read()
    with open(path, "wb") as f:  # one flipped bit in the payload
        f.write(good[:200] + bytes([good[200] ^ 1]) + good[201:])
    with pytest.raises(PackedFileError, match="checksum"):
        load_packed(path)
    with open(path, "wb") as f:
        f.write(good[: len(good) // 2])
    with pytest.raises(PackedFileError, match="checksum"):
        load_packed(path)
    with open(path, "wb") as f:
        f.write(b"\x00" * 10)
    with pytest.raises(PackedFileError, match="too short"):
        load_packed(path)
    with open(path, "wb") as f:
        f.write(good)
    _rewrite(path, version=2)
    with pytest.raises(PackedFileError, match="version 2"):
        load_packed(path)
    with open(path, "wb") as f:
        f.write(good)

    def other_arch(h):
        h["config"]["model"]["num_hidden_layers"] = 1
    _rewrite(path, mutate_header=other_arch)
    with pytest.raises(PackedFileError, match="unexpected"):
        load_packed(path)
    with open(ckpt := str(tmp_path / "x.tbq"), "wb") as f:
        f.write(b"NOTAPACKEDFILE" * 10)
    with pytest.raises(PackedFileError, match="magic"):
        load_packed(ckpt)


@pytest.mark.parametrize("act_mode", ["symmetric", "learned"])
def test_export_py_static_shapes_and_packed(tmp_path, graph, act_mode):
    """learned: the MINDIR's ranges are baked in as constants (ActQuant.bake_range), same logits."""
    import export
    _student(tmp_path, QuantConfig(act_mode=act_mode), np.random.RandomState(4))
    written = export.main(["--checkpoint", str(tmp_path / "s.ckpt"), "--output", str(tmp_path / "e"),
                           "--batch_size", "2", "--seq_length", "9", "--file_format", "MINDIR"])
    assert written == [str(tmp_path / f"e.{x}") for x in ("mindir", "tbq", "size.json", "json", "manifest.json")]
    size = json.load(open(tmp_path / "e.size.json"))
    assert size["packed_bytes"] == os.path.getsize(tmp_path / "e.tbq")
    cell = ms.nn.GraphCell(ms.load(str(tmp_path / "e.mindir")))
    ids, mask, seg = tiny_batch(np.random.RandomState(5), b=2, s=9)
    net, _ = load_network(str(tmp_path / "s.ckpt"))
    net.set_train(False)
    np.testing.assert_array_equal(cell(T(ids), T(mask), T(seg)).asnumpy(),
                                  LogitsOnly(net)(T(ids), T(mask), T(seg)).asnumpy())


@pytest.mark.parametrize("quant", [QuantConfig(), QuantConfig(ternarizer="lat", embedding_granularity="layer",
                                                              act_mode="asymmetric_ema"),
                                   QuantConfig(weight_bits=8, embedding_bits=8, act_mode="learned")],
                         ids=["twn-row", "lat-layer-ema", "8-8-8-learned"])
def test_frozen_twin_follows_the_network_it_evaluates(pynative, quant):
    """What training evaluates (src.trainer.evaluate): the frozen twin gives exactly the network's
    own logits (its forward re-runs the weight quantizers), and after the network's weights change,
    a refresh gives the new logits (a stale twin would not)."""
    from src.packing import FrozenTwin
    from src.tinybert_model import set_compute_dtype
    rng = np.random.RandomState(7)
    cfg = tiny_config(3)
    net = BertForSequenceClassification(cfg, quant)
    randomize(net, rng, 0.3)
    net.set_train(False)
    twin = FrozenTwin(net, RunConfig(task="mnli", model=cfg, quant=quant))
    first = twin.network
    batches = [tiny_batch(rng, b=3, s=10), tiny_batch(rng, b=2, s=17)]
    before = []
    for step in range(2):
        if step:
            randomize(net, rng, 0.3)  # "a training step": every weight changes
            net.set_train(False)
            twin.refresh()
        evaluated = twin.network
        assert not any(n.endswith("lat_d") for n, _ in evaluated.parameters_and_names())
        for i, (ids, mask, seg) in enumerate(batches):
            want = LogitsOnly(net)(T(ids), T(mask), T(seg)).asnumpy()
            got = LogitsOnly(evaluated)(T(ids), T(mask), T(seg)).asnumpy()
            np.testing.assert_array_equal(got, want)
            if step:
                assert np.abs(got - before[i]).max() > 1e-3  # the refresh did change the outputs
            else:
                before.append(got)
    assert twin.refresh() is first  # one twin for the whole run: its graph compiles once
    # a network trained in float16 is evaluated in float16
    half = BertForSequenceClassification(cfg, quant)
    set_compute_dtype(half, ms.float16)
    twin16 = FrozenTwin(half, RunConfig(task="mnli", model=cfg, quant=quant)).network
    assert {c.compute_dtype for _, c in twin16.cells_and_names() if hasattr(c, "compute_dtype")} == {ms.float16}
