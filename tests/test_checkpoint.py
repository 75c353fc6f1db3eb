"""Hugging Face import with an explicit name map, strict loading, and the real teachers' metrics."""
import json
import os
import shutil

import numpy as np
import pytest
import mindspore as ms

from conftest import GLUE, TEACHERS, VOCAB, randomize, tiny_batch, tiny_config
from src.checkpoint import CheckpointError, import_hf, load_network, read_checkpoint, save_network
from src.config import QuantConfig, RunConfig
from src.tinybert_model import BertForSequenceClassification

T = ms.Tensor


def _hf_folder(path, cfg, prefix="bert.", classifier=True, drop=None, reshape=None, extra=None):
    """A Hugging Face style folder with random weights (names as transformers writes them)."""
    from safetensors.numpy import save_file
    rng = np.random.RandomState(0)
    net = BertForSequenceClassification(cfg, QuantConfig.full_precision())
    randomize(net, rng, 0.2)
    tensors = {}
    for n, p in net.parameters_and_names():
        if n.startswith("classifier."):
            if classifier:
                tensors[n] = p.asnumpy()
        else:
            tensors[prefix + n[len("bert."):]] = p.asnumpy().astype(np.float16)
    tensors[prefix + "embeddings.position_ids"] = np.arange(cfg.max_position_embeddings)[None].astype(np.int64)
    if drop:
        tensors.pop(drop)
    if reshape:
        tensors[reshape] = np.zeros((3, 3), np.float32)
    if extra:
        tensors[extra] = np.zeros(2, np.float32)
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, "model.safetensors"))
    hf = {"model_type": "bert", "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
          "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
          "intermediate_size": cfg.intermediate_size, "max_position_embeddings": cfg.max_position_embeddings,
          "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf, f)
    shutil.copyfile(VOCAB, os.path.join(path, "vocab.txt"))
    return net


def test_import_maps_every_tensor(tmp_path, pynative):
    cfg = tiny_config(2)
    ref = _hf_folder(str(tmp_path / "hf"), cfg)
    import_hf(str(tmp_path / "hf"), "rte", str(tmp_path / "out" / "m.ckpt"))
    net, run = load_network(str(tmp_path / "out" / "m.ckpt"))
    assert run.task == "rte" and run.quant.is_float and run.model.num_hidden_layers == 2
    assert os.path.isfile(tmp_path / "out" / "vocab.txt")
    for (n, a), (_, b) in zip(ref.parameters_and_names(), net.parameters_and_names()):
        expect = a.asnumpy() if n.startswith("classifier") else a.asnumpy().astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(b.asnumpy(), expect, err_msg=n)


def test_backbone_without_classifier_gets_a_new_one(tmp_path, pynative):
    _hf_folder(str(tmp_path / "hf"), tiny_config(1), prefix="", classifier=False)
    ms.set_seed(123)
    before = ms.get_seed()
    run = import_hf(str(tmp_path / "hf"), "sts-b", str(tmp_path / "m.ckpt"), seed=7)
    assert run.model.num_labels == 1
    assert ms.get_seed() == before  # importing leaves the global seed alone
    net, _ = load_network(str(tmp_path / "m.ckpt"))
    w = net.classifier.weight.asnumpy()
    np.testing.assert_allclose(w, np.random.RandomState(7).normal(0, 0.02, w.shape).astype(np.float32))
    assert not net.classifier.bias.asnumpy().any()


@pytest.mark.parametrize("kw,msg", [
    (dict(drop="bert.encoder.layer.1.output.dense.weight"), "bert.encoder.layer.1.output.dense.weight is missing"),
    (dict(reshape="bert.pooler.dense.weight"), r"bert.pooler.dense.weight has shape \(3, 3\)"),
    (dict(extra="bert.encoder.layer.7.output.dense.bias"), "unexpected tensors"),
])
def test_import_refuses_mismatched_checkpoints(tmp_path, kw, msg):
    _hf_folder(str(tmp_path / "hf"), tiny_config(2), **kw)
    with pytest.raises(CheckpointError, match=msg):
        import_hf(str(tmp_path / "hf"), "rte", str(tmp_path / "m.ckpt"))
    assert not os.path.exists(tmp_path / "m.ckpt")


def test_import_refuses_wrong_head_and_existing_output(tmp_path):
    _hf_folder(str(tmp_path / "hf"), tiny_config(2))
    with pytest.raises(CheckpointError, match="classifier has 2 outputs but task sts-b needs 1"):
        import_hf(str(tmp_path / "hf"), "sts-b", str(tmp_path / "m.ckpt"))
    import_hf(str(tmp_path / "hf"), "rte", str(tmp_path / "m.ckpt"))
    with pytest.raises(FileExistsError):
        import_hf(str(tmp_path / "hf"), "rte", str(tmp_path / "m.ckpt"))


def test_a_checkpoint_name_without_ckpt_is_refused_before_writing_and_reading(tmp_path, pynative):
    """MindSpore loads only *.ckpt names: an import to 'teacher' would write a file nothing reads."""
    _hf_folder(str(tmp_path / "hf"), tiny_config(2))
    with pytest.raises(CheckpointError, match=r"teacher: a MindSpore checkpoint's name must end in \.ckpt"):
        import_hf(str(tmp_path / "hf"), "rte", str(tmp_path / "teacher"))
    assert sorted(os.listdir(tmp_path)) == ["hf"]  # nothing written, not even the .json
    import_hf(str(tmp_path / "hf"), "rte", str(tmp_path / "t.ckpt"))
    os.rename(tmp_path / "t.ckpt", tmp_path / "t.bin")
    with pytest.raises(CheckpointError, match=r"t.bin: a MindSpore checkpoint's name must end in \.ckpt$"):
        read_checkpoint(str(tmp_path / "t.bin"))
    os.rename(tmp_path / "t.bin", tmp_path / "t.onnx")  # a deployment file given as a teacher
    with pytest.raises(CheckpointError, match=r"t.onnx: .* a .onnx file is a deployment file; training reads the "
                                              r"\.ckpt it was exported from"):
        read_checkpoint(str(tmp_path / "t.onnx"))


def test_strict_loading_names_the_mismatch(tmp_path, pynative):
    net = BertForSequenceClassification(tiny_config(2), QuantConfig.full_precision())
    run = RunConfig(task="rte", model=tiny_config(2), quant=QuantConfig.full_precision())
    save_network(net, str(tmp_path / "a.ckpt"), run)
    # a checkpoint of another architecture under the same config
    other = BertForSequenceClassification(tiny_config(2, layers=1), QuantConfig.full_precision())
    save_network(other, str(tmp_path / "b.ckpt"), run)
    with pytest.raises(CheckpointError, match="missing .*bert.encoder.layer.1"):
        load_network(str(tmp_path / "b.ckpt"))
    with pytest.raises(FileNotFoundError, match="config file"):
        os.remove(tmp_path / "a.json")
        load_network(str(tmp_path / "a.ckpt"))
    # a float checkpoint initialises a quantized student: only quantizer state may be absent
    save_network(net, str(tmp_path / "c.ckpt"), run)
    student, _ = load_network(str(tmp_path / "c.ckpt"), quant=QuantConfig(ternarizer="lat", act_mode="asymmetric_ema"))
    np.testing.assert_array_equal(student.bert.pooler.dense.weight.asnumpy(), net.bert.pooler.dense.weight.asnumpy())
    student, _ = load_network(str(tmp_path / "c.ckpt"), quant=QuantConfig(act_mode="learned", act_clip=2.5))
    attn = student.bert.encoder.layer[0].attention.self
    assert attn.q_quant.clip.asnumpy() == 2.5 and attn.p_quant.clip.asnumpy() == 1.0  # initial values


def test_flipped_byte_and_truncated_checkpoint_are_refused_with_their_name(tmp_path, pynative):
    """Checkpoints carry a CRC: one flipped byte anywhere in the tensor data is refused, never loaded."""
    net = BertForSequenceClassification(tiny_config(2), QuantConfig.full_precision())
    run = RunConfig(task="rte", model=tiny_config(2), quant=QuantConfig.full_precision())
    path = str(tmp_path / "a.ckpt")
    save_network(net, path, run)
    good = open(path, "rb").read()
    for pos in (len(good) // 3, len(good) // 2, len(good) - 40):
        with open(path, "wb") as f:
            f.write(good[:pos] + bytes([good[pos] ^ 0x01]) + good[pos + 1:])
        with pytest.raises(CheckpointError, match="a.ckpt is truncated, corrupted"):
            load_network(path)
    with open(path, "wb") as f:
        f.write(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="a.ckpt is truncated, corrupted"):
        load_network(path)


def _teacher_metric(tmp_path, task, max_len):
    from src.glue import convert
    from src.trainer import evaluate
    if not os.path.isdir(GLUE):
        pytest.skip("../shared not present")
    ms.set_context(mode=ms.GRAPH_MODE)
    folder = os.path.join(TEACHERS, task)
    import_hf(folder, task, str(tmp_path / "t.ckpt"))
    convert(task, GLUE, os.path.join(folder, "vocab.txt"), str(tmp_path / "data"), max_len, splits=("dev",),
            progress=False)
    net, _ = load_network(str(tmp_path / "t.ckpt"))
    return evaluate(net, str(tmp_path / "data"), task, 32, "mindrecord")


@pytest.mark.slow
def test_imported_stsb_teacher_reaches_its_pytorch_pearson(tmp_path):
    m = _teacher_metric(tmp_path, "sts-b", 128)
    assert m["examples"] == 1500
    assert abs(m["pearson"] - 0.85703) < 1e-4 and abs(m["spearman"] - 0.85877) < 1e-4


@pytest.mark.slow
def test_imported_sst2_teacher_reaches_its_pytorch_accuracy(tmp_path):
    m = _teacher_metric(tmp_path, "sst-2", 64)
    assert m["examples"] == 872
    assert abs(m["acc"] - 0.89908) < 1e-4
