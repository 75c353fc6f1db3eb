"""Tokenization, GLUE processors, the converter, both record formats, and the metrics."""
import csv
import os

import numpy as np
import pytest

from conftest import GLUE, VOCAB
from src.config import TASKS, get_task
from src.dataset import bucket_length, create_dataset, length_batches
from src.glue import DataError, convert, read_examples
from src.metrics import compute_metrics, f1_binary, matthews, pearson, spearman
from src.tokenization import BertTokenizer, encode_pair, truncate_pair

needs_glue = pytest.mark.skipif(not os.path.isdir(GLUE), reason="../shared/data/glue not present")


def _manifest_rows():
    with open(os.path.join(GLUE, "MANIFEST.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return {r["file"]: int(r["lines"]) for r in rows}


# ---- tokenization ------------------------------------------------------------------------
@needs_glue
def test_tokenization_equals_reference_on_all_of_stsb_dev():
    from tokenizers import BertWordPieceTokenizer  # the independent reference
    refk = BertWordPieceTokenizer(VOCAB, lowercase=True, strip_accents=None, clean_text=True,
                                  handle_chinese_chars=True)
    tok = BertTokenizer(VOCAB, do_lower_case=True)
    examples = read_examples(os.path.join(GLUE, "STS-B", "dev.tsv"), get_task("sts-b"))
    texts = [t for e in examples for t in (e.text_a, e.text_b)]
    assert len(texts) == 3000
    mismatches = [t for t in texts
                  if tok.convert_tokens_to_ids(tok.tokenize(t)) != refk.encode(t, add_special_tokens=False).ids]
    assert mismatches == []


def test_tokenizer_special_cases():
    tok = BertTokenizer(VOCAB, do_lower_case=True)
    assert tok.tokenize("Héllo, WORLD!") == ["hello", ",", "world", "!"]
    assert tok.tokenize("a\u0000b\tc") == ["ab", "c"]  # control characters dropped
    assert tok.tokenize("中文") == ["中", "文"]  # CJK characters split apart
    assert tok.tokenize("x" * 101) == ["[UNK]"]
    assert tok.tokenize("unaffable")[0] == "una" and tok.tokenize("unaffable")[1].startswith("##")


def test_pair_truncation_longest_first():
    a, b = list(range(10)), list(range(4))
    assert truncate_pair(a, b, 8) and (len(a), len(b)) == (4, 4)
    a, b = list(range(5)), list(range(5))
    truncate_pair(a, b, 7)
    assert (len(a), len(b)) == (4, 3)  # ties pop from b first, then the longer a
    tok = BertTokenizer(VOCAB)
    ids, mask, seg, cut = encode_pair(tok, "a b c d e f", "g h", 8)
    v = tok.vocab
    assert ids == [v["[CLS]"], v["a"], v["b"], v["c"], v["[SEP]"], v["g"], v["h"], v["[SEP]"]]
    assert seg == [0, 0, 0, 0, 0, 1, 1, 1] and mask == [1] * 8 and cut


# ---- processors and converter -------------------------------------------------------------
@needs_glue
def test_every_available_task_converts_with_manifest_row_counts(tmp_path):
    lines = _manifest_rows()
    done = 0
    for name, spec in TASKS.items():
        for split, fname in (("train", "train.tsv"), ("dev", spec.dev_file)):
            key = f"{spec.folder}/{fname}"
            if key not in lines or name == "mnli-mm":
                continue
            expect = lines[key] - (1 if spec.header else 0)
            out = tmp_path / f"{name}-{split}"
            meta = convert(name, GLUE, VOCAB, str(out), 32, formats=("mindrecord",), splits=(split,),
                           progress=False)
            assert meta["splits"][split]["examples"] == expect, key
            done += 1
    assert done == 13  # STS-B, SST-2, MRPC, RTE, CoLA, WNLI train+dev; QNLI dev


def test_crc32c_and_record_framing_match_published_values():
    from src.tfrecord import crc32c, frame, masked_crc32c
    # RFC 3720, appendix B.4, and the usual check value of "123456789"
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
    assert masked_crc32c(b"") == 0xA282EAD8  # crc 0, rotated, plus TFRecord's offset
    rec = frame(b"xy")
    assert rec[:8] == (2).to_bytes(8, "little") and rec[12:14] == b"xy" and len(rec) == 18


def test_example_encoding_matches_hand_encoded_protobuf():
    from src.tfrecord import encode_example
    # Example{features{feature{key "a" value{int64_list{value: [1, 300]}}}}}: 300 is the varint AC 02
    ints = bytes([0x0A, 0x0E, 0x0A, 0x0C, 0x0A, 0x01, ord("a"), 0x12, 0x07,
                  0x1A, 0x05, 0x0A, 0x03, 0x01, 0xAC, 0x02])
    assert encode_example({"a": np.array([1, 300], np.int32)}) == ints
    # a FloatList (Feature field 2) of one float32 1.5 = 00 00 C0 3F
    floats = bytes([0x0A, 0x0F, 0x0A, 0x0D, 0x0A, 0x01, ord("y"), 0x12, 0x08,
                    0x12, 0x06, 0x0A, 0x04, 0x00, 0x00, 0xC0, 0x3F])
    assert encode_example({"y": np.array([1.5], np.float32)}) == floats


def test_mindrecord_and_tfrecord_give_identical_batches(tmp_path, glue_dir):
    # the TFRecord files are written by src/tfrecord.py and read by MindSpore's own TFRecord reader
    for task in ("sts-b", "sst-2"):
        out = tmp_path / task
        convert(task, glue_dir, VOCAB, str(out), 48, formats=("mindrecord", "tfrecord"), limit=40, progress=False)
        for training in (False, True):
            got = {}
            for fmt in ("mindrecord", "tfrecord"):
                data = create_dataset(str(out), "train", task, 8, fmt, training=training, seed=3)
                got[fmt] = [{k: v for k, v in b.items()} for b in data.create_dict_iterator(output_numpy=True)]
            assert len(got["mindrecord"]) == len(got["tfrecord"]) == 5
            if training:  # shuffled: not the file order
                plain = next(create_dataset(str(out), "train", task, 8, "mindrecord").create_dict_iterator(
                    output_numpy=True))
                assert not (plain["input_ids"] == got["mindrecord"][0]["input_ids"]).all()
            for a, b in zip(got["mindrecord"], got["tfrecord"]):
                for k in a:
                    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
                    np.testing.assert_array_equal(a[k], b[k])
            label = got["mindrecord"][0]["label_ids"]
            assert label.shape == (8,) and label.dtype == (np.float32 if task == "sts-b" else np.int32)


@needs_glue
def test_training_pipeline_shuffles_with_seed_drops_remainder_and_shards(tmp_path):
    out = tmp_path / "rte"
    convert("rte", GLUE, VOCAB, str(out), 32, limit=50, splits=("train",), progress=False)

    def ids(**kw):
        d = create_dataset(str(out), "train", "rte", 8, "mindrecord", **kw)
        return [b["input_ids"] for b in d.create_dict_iterator(output_numpy=True)]
    a, b = ids(training=True, seed=1), ids(training=True, seed=1)
    assert len(a) == 6  # 50 // 8, remainder dropped
    assert all((x == y).all() for x, y in zip(a, b))
    assert not all((x == y).all() for x, y in zip(a, ids(training=True, seed=2)))
    assert len(ids(training=False)) == 7  # evaluation keeps the partial batch
    s0 = np.concatenate(ids(num_shards=2, shard_id=0, training=False))
    s1 = np.concatenate(ids(num_shards=2, shard_id=1, training=False))
    assert len(s0) == len(s1) == 25
    assert not {r.tobytes() for r in s0} & {r.tobytes() for r in s1}


def test_length_batches_cover_every_row_once_and_group_by_length():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=1003)
    batches = length_batches(lengths, 16, seed=5)
    assert len(batches) == 1003 // 16 and all(len(b) == 16 for b in batches)
    rows = np.concatenate(batches)
    assert len(set(rows.tolist())) == len(rows)  # no row twice; 11 left over (1003 - 62 * 16)
    again = length_batches(lengths, 16, seed=5)
    assert all((a == b).all() for a, b in zip(batches, again))
    other = length_batches(lengths, 16, seed=6)
    assert not all((a == b).all() for a, b in zip(batches, other))
    # grouped: the spread of lengths inside a batch is far below that of random batches
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    random_spread = np.mean([np.ptp(lengths[b]) for b in rng.permutation(992).reshape(-1, 16)])
    assert spread < 0.25 * random_spread, (spread, random_spread)
    assert [bucket_length(n, 16, 64) for n in (1, 16, 17, 47, 64)] == [16, 16, 32, 48, 64]
    assert bucket_length(50, 16, 50) == 50  # never beyond the records' length


def test_bucketed_training_batches_are_the_records_cut_to_fit(tmp_path):
    rng = np.random.default_rng(1)
    words = ["good", "bad", "movie", "the", "a", "film", "plot", "great", "dull", "actors"]
    lines = ["sentence\tlabel"] + [" ".join(rng.choice(words, rng.integers(1, 28))) + f"\t{i % 2}"
                                   for i in range(70)]
    _write(tmp_path / "glue" / "SST-2" / "train.tsv", "\n".join(lines) + "\n")
    out = str(tmp_path / "rec")
    convert("sst-2", str(tmp_path / "glue"), VOCAB, out, 32, splits=("train",), progress=False)
    full = next(create_dataset(out, "train", "sst-2", 70, "mindrecord").create_dict_iterator(output_numpy=True))
    by_row = {full["input_ids"][i].tobytes(): i for i in range(70)}
    assert len(by_row) == 70

    def batches(**kw):
        d = create_dataset(out, "train", "sst-2", 8, "mindrecord", training=True, bucket_width=8, **kw)
        return list(d.create_dict_iterator(output_numpy=True))
    got = batches(seed=3)
    assert len(got) == 70 // 8
    seen = []
    for b in got:
        s = b["input_ids"].shape[1]
        longest = b["input_mask"].sum(axis=1).max()
        assert s in (8, 16, 24, 32) and longest <= s and (s == 8 or longest > s - 8), (s, longest)
        assert b["label_ids"].shape == (8,) and b["label_ids"].dtype == np.int32
        for r in range(8):
            ids = np.zeros(32, np.int32)
            ids[:s] = b["input_ids"][r]
            i = by_row[ids.tobytes()]  # the row, cut only where the records hold padding
            seen.append(i)
            for col in ("input_mask", "segment_ids"):
                np.testing.assert_array_equal(b[col][r], full[col][i][:s])
                assert not full[col][i][s:].any()
            assert b["label_ids"][r] == full["label_ids"][i]
    assert len(set(seen)) == len(seen) == 64
    assert len({b["input_ids"].shape[1] for b in got}) > 1  # the lengths really vary here
    # resumable: the same seed gives the same batches, and skip(k) is their tail
    again = batches(seed=3)
    assert all((a["input_ids"] == b["input_ids"]).all() for a, b in zip(got, again))
    d = create_dataset(out, "train", "sst-2", 8, "mindrecord", training=True, bucket_width=8, seed=3).skip(5)
    tail = list(d.create_dict_iterator(output_numpy=True))
    assert all((a["input_ids"] == b["input_ids"]).all() for a, b in zip(got[5:], tail)) and len(tail) == 3
    # two data-parallel ranks: the same cut length at every step, disjoint rows
    r0, r1 = batches(seed=3, num_shards=2, shard_id=0), batches(seed=3, num_shards=2, shard_id=1)
    assert len(r0) == len(r1) == 70 // 16
    for a, b in zip(r0, r1):
        assert a["input_ids"].shape == b["input_ids"].shape
        assert not {x.tobytes() for x in a["input_ids"]} & {x.tobytes() for x in b["input_ids"]}


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_bad_input_is_reported_with_file_and_line(tmp_path):
    spec = get_task("rte")
    bad = _write(tmp_path / "RTE" / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n")
    with pytest.raises(DataError, match=r"train.tsv:3: expected 4 tab-separated fields, found 3"):
        read_examples(str(bad), spec)
    bad.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(DataError, match=r"train.tsv:2: unknown label 'maybe'"):
        read_examples(str(bad), spec)
    bad.write_text("")
    with pytest.raises(DataError, match="no examples"):
        read_examples(str(bad), spec)
    stsb = _write(tmp_path / "STS-B" / "train.tsv", "\t".join(["h"] * 10) + "\n" + "\t".join(["x"] * 10) + "\n")
    with pytest.raises(DataError, match="train.tsv:2: label 'x' is not a number"):
        read_examples(str(stsb), get_task("sts-b"))


def test_converter_refuses_bad_arguments_and_writes_nothing(tmp_path):
    glue = tmp_path / "glue"
    _write(glue / "RTE" / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\n")
    _write(glue / "RTE" / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="no CoLA task folder"):
        convert("cola", str(glue), VOCAB, str(out), 32)
    with pytest.raises(FileNotFoundError, match="vocab file"):
        convert("rte", str(glue), str(tmp_path / "none.txt"), str(out), 32)
    with pytest.raises(ValueError, match="above the model's position limit 512"):
        convert("rte", str(glue), VOCAB, str(out), 600)
    with pytest.raises(ValueError, match="unknown task"):
        convert("rte-x", str(glue), VOCAB, str(out), 32)
    with pytest.raises(DataError, match="train.tsv:3"):
        convert("rte", str(glue), VOCAB, str(out), 32, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["glue"]  # no partial output left behind
    convert("rte", str(glue), VOCAB, str(out), 32, splits=("dev",), progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert("rte", str(glue), VOCAB, str(out), 32, splits=("dev",), progress=False)
    convert("rte", str(glue), VOCAB, str(out), 32, splits=("dev",), progress=False, overwrite=True)


def test_train_file_replaces_the_train_split_with_the_same_checks(tmp_path):
    """--train_file (TinyBERT's train_aug.tsv): its rows become the train split, checked as train.tsv."""
    header = "index\tsentence1\tsentence2\tlabel\n"
    glue = tmp_path / "glue"
    _write(glue / "RTE" / "train.tsv", header + "0\tx\ty\tentailment\n")
    _write(glue / "RTE" / "dev.tsv", header + "0\tx\ty\tentailment\n")
    aug = _write(tmp_path / "train_aug.tsv", header + "0\tthe cat\ta dog\tnot_entailment\n"
                 "0\tthe dog\ta cat\tentailment\n1\tthe man\ta day\tentailment\n")
    meta = convert("rte", str(glue), VOCAB, str(tmp_path / "out"), 16, progress=False, train_file=str(aug))
    assert meta["splits"]["train"]["examples"] == 3 and meta["splits"]["train"]["source"] == str(aug)
    assert meta["splits"]["train"]["labels"] == {"entailment": 2, "not_entailment": 1}
    assert meta["splits"]["dev"]["examples"] == 1
    batch = next(create_dataset(str(tmp_path / "out"), "train", "rte", 3).create_dict_iterator(output_numpy=True))
    vocab = [w.rstrip("\n") for w in open(VOCAB, encoding="utf-8")]
    expect = [vocab.index(w) for w in ("[CLS]", "the", "cat", "[SEP]", "a", "dog", "[SEP]")]
    assert list(batch["input_ids"][0][:7]) == expect and batch["input_ids"][0][7] == 0
    assert list(batch["label_ids"].reshape(-1)) == [1, 0, 0]  # RTE labels: entailment, not_entailment
    _write(aug, header + "0\tthe cat\ta dog\tnot_entailment\n1\tthe man\n")
    with pytest.raises(DataError, match=r"train_aug.tsv:3: expected 4 tab-separated fields"):
        convert("rte", str(glue), VOCAB, str(tmp_path / "out2"), 16, progress=False, train_file=str(aug))
    with pytest.raises(FileNotFoundError, match="train file"):
        convert("rte", str(glue), VOCAB, str(tmp_path / "out2"), 16, train_file=str(tmp_path / "none.tsv"))
    with pytest.raises(ValueError, match="replaces the train split"):
        convert("rte", str(glue), VOCAB, str(tmp_path / "out2"), 16, splits=("dev",), train_file=str(aug))
    assert not os.path.exists(tmp_path / "out2")


def _mnli_rows(path, labels, fields):
    head = "\t".join(f"h{i}" for i in range(fields - 1)) + "\tgold_label\n"
    rows = "".join("\t".join(["x"] * 8 + [f"a {lab}", "b"] + ["y"] * (fields - 11) + [lab]) + "\n" for lab in labels)
    return _write(path, head + rows)


def test_mnli_mismatched_is_a_dev_split_evaluated_beside_matched(tmp_path):
    """One MNLI model: the converter writes matched (dev) and mismatched (dev_mm) records, and
    evaluation reports both (mm_ prefixed), selecting on matched. Accuracies hand-counted."""
    from src.trainer import split_metrics
    glue = tmp_path / "glue"
    _mnli_rows(glue / "MNLI" / "train.tsv", ["neutral", "entailment", "contradiction"], 12)
    _mnli_rows(glue / "MNLI" / "dev_matched.tsv", ["entailment", "neutral", "neutral", "contradiction"], 16)
    _mnli_rows(glue / "MNLI" / "dev_mismatched.tsv",
               ["entailment", "entailment", "neutral", "entailment", "contradiction"], 16)
    meta = convert("mnli", str(glue), VOCAB, str(tmp_path / "rec"), 16, progress=False)
    assert {k: v["examples"] for k, v in meta["splits"].items()} == {"train": 3, "dev": 4, "dev_mm": 5}

    def always_entailment(ids, mask, seg):  # MNLI labels: contradiction, entailment, neutral
        return np.tile(np.array([[0.0, 1.0, 0.0]], np.float32), (len(ids), 1))
    m = split_metrics(always_entailment, str(tmp_path / "rec"), "mnli", 2, "mindrecord")
    assert m["acc"] == 1 / 4 and m["mm_acc"] == 3 / 5 and m["select"] == 1 / 4
    assert m["examples"] == 4 and m["mm_examples"] == 5
    alone = split_metrics(always_entailment, str(tmp_path / "rec"), "mnli", 2, "mindrecord", split="dev_mm")
    assert alone["acc"] == 3 / 5 and "mm_acc" not in alone
    # without the mismatched file the conversion names it; --splits train dev converts matched only
    os.remove(glue / "MNLI" / "dev_mismatched.tsv")
    with pytest.raises(FileNotFoundError, match="dev_mismatched.tsv does not exist; to convert without it, "
                                                "pass --splits train dev"):
        convert("mnli", str(glue), VOCAB, str(tmp_path / "rec2"), 16, progress=False)
    convert("mnli", str(glue), VOCAB, str(tmp_path / "rec2"), 16, splits=("train", "dev"), progress=False)
    assert set(split_metrics(always_entailment, str(tmp_path / "rec2"), "mnli", 2, "mindrecord")) >= {"acc"}
    assert "mm_acc" not in split_metrics(always_entailment, str(tmp_path / "rec2"), "mnli", 2, "mindrecord")
    with pytest.raises(ValueError, match="holds no dev_mm split"):
        split_metrics(always_entailment, str(tmp_path / "rec2"), "mnli", 2, "mindrecord", split="dev_mm")


def test_evaluation_batches_have_one_shape_and_the_same_per_batch_statistics(tmp_path):
    """predict_records fills the last batch up with copies of its rows: every call has batch_size
    rows (one compiled graph), and a per-batch statistic (here a max, as the 8-bit activation
    scale) is the one of the unfilled batch, so no real row's output changes."""
    from conftest import synthetic_glue
    from src.trainer import predict_records
    glue = synthetic_glue(str(tmp_path / "glue"), n_train=8, n_dev=37)
    convert("sst-2", glue, VOCAB, str(tmp_path / "rec"), 24, splits=("dev",), progress=False)
    shapes = []

    def fn(ids, mask, seg):  # [B, S] -> [B, 2], depends on the whole batch through its max
        shapes.append(ids.shape)
        s = ids.astype(np.float64).sum(1, keepdims=True) / ids.max()
        return np.concatenate([s, -s], 1)
    got, labels = predict_records(fn, str(tmp_path / "rec"), "sst-2", 16, "mindrecord")
    assert shapes == [(16, 24)] * 3 and got.shape == (37, 2) and labels.shape == (37,)
    raw = [b for b in create_dataset(str(tmp_path / "rec"), "dev", "sst-2", 16).create_dict_iterator(output_numpy=True)]
    assert [len(b["input_ids"]) for b in raw] == [16, 16, 5]
    expect = np.concatenate([b["input_ids"].astype(np.float64).sum(1, keepdims=True) / b["input_ids"].max()
                             for b in raw])  # each batch as it is, the short one unfilled
    np.testing.assert_array_equal(got[:, :1], expect)


@pytest.mark.parametrize("quant_kw", [None, {}, {"act_mode": "learned"}, {"act_mode": "asymmetric_ema"},
                                      {"ternarizer": "lat"}])
def test_evaluation_streams_layers_through_one_graph_with_the_whole_networks_logits(tmp_path, graph, quant_kw):
    """What training evaluates (trainer.evaluate): tinybert_model.LayerStreamed, one compiled encoder
    layer loaded with each layer's parameters in turn. Its logits are the whole network's (one
    graph), for a float network also the numpy model's; each layer's own activation ranges are used
    (set different per layer here), and the network's parameters are left as they were."""
    import dataclasses
    import mindspore as ms
    import numpy_ref as ref
    import src.trainer as trainer
    from conftest import randomize, synthetic_glue, tiny_batch, tiny_config
    from src.config import QuantConfig, RunConfig
    from src.packing import FrozenTwin
    from src.quant import ActQuant
    from src.tinybert_model import BertForSequenceClassification, LayerStreamed, LogitsOnly
    T = ms.Tensor
    cfg = dataclasses.replace(tiny_config(1, layers=3), vocab_size=30522)  # the backbone vocabulary's ids
    quant = QuantConfig.full_precision() if quant_kw is None else QuantConfig(**quant_kw)
    net = BertForSequenceClassification(cfg, quant)
    rng = np.random.RandomState(3)
    randomize(net, rng, 0.3)
    for _, c in net.cells_and_names():  # per-layer ranges that differ (randomize keeps them at their start)
        if isinstance(c, ActQuant) and c.mode == "learned":
            c.clip.set_data(T(rng.uniform(0.5, 3.0, (1,)).astype(np.float32)))
        if isinstance(c, ActQuant) and c.mode == "asymmetric_ema":
            c.ema_lo.set_data(T(np.float32(-rng.uniform(0.5, 3.0))))
            c.ema_hi.set_data(T(np.float32(rng.uniform(0.5, 3.0))))
    net.set_train(False)
    run = RunConfig(task="sts-b", model=cfg, quant=quant)
    if quant_kw is not None:
        with pytest.raises(ValueError, match="stream the frozen twin"):
            LayerStreamed(net)  # weight quantizers: what training streams is the network's frozen twin
    frozen = FrozenTwin(net, run).network if quant_kw is not None else net
    before = {n: p.asnumpy().copy() for n, p in frozen.parameters_and_names()}
    streamed, whole = LayerStreamed(frozen), LogitsOnly(frozen)
    for b, s in ((4, 12), (3, 20)):
        ids, mask, seg = tiny_batch(rng, b=b, s=s, vocab=30522)
        got = streamed(T(ids), T(mask), T(seg)).asnumpy()
        np.testing.assert_array_equal(got, whole(T(ids), T(mask), T(seg)).asnumpy())
        np.testing.assert_array_equal(got, LogitsOnly(net)(T(ids), T(mask), T(seg)).asnumpy())  # the twin's: the network's
        if quant_kw is None:
            P = {n: p.asnumpy() for n, p in net.parameters_and_names()}
            np.testing.assert_allclose(got, ref.bert_forward(P, cfg, ids, mask, seg)[0], atol=1e-5)
    for n, p in frozen.parameters_and_names():
        np.testing.assert_array_equal(p.asnumpy(), before[n], err_msg=n)
    # trainer.evaluate runs it: the metrics of the whole network's graph on a records folder
    glue = synthetic_glue(str(tmp_path / "glue"), n_train=8, n_dev=37)
    convert("sts-b", glue, VOCAB, str(tmp_path / "rec"), 24, splits=("dev",), progress=False)
    args = (str(tmp_path / "rec"), "sts-b", 16, "mindrecord")
    from src.deploy import MindsporePredictor
    expect = trainer.split_metrics(MindsporePredictor(whole, None, "whole"), *args)
    assert trainer.evaluate(net, *args, run=run) == expect and expect["examples"] == 37
    if quant_kw is not None:  # without its run a quantized network is evaluated whole, weight quantizers in
        trainer._EVAL_VIEW[0] = None
        assert trainer.evaluate(net, *args) == expect


def test_cola_without_header_and_mrpc_bom(tmp_path):
    cola = _write(tmp_path / "CoLA" / "dev.tsv", "gj04\t1\t\tThe sailors rode.\ngj04\t0\t*\tRode the.")
    ex = read_examples(str(cola), get_task("cola"))
    assert [(e.text_a, e.label) for e in ex] == [("The sailors rode.", 1.0), ("Rode the.", 0.0)]
    mrpc = _write(tmp_path / "MRPC" / "dev.tsv",
                  "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\t\"A\tB \"\n")
    ex = read_examples(str(mrpc), get_task("mrpc"))
    assert (ex[0].text_a, ex[0].text_b, ex[0].label) == ('"A', 'B "', 1.0)  # quoting off


# ---- metrics -----------------------------------------------------------------------------
def test_metrics_against_hand_computed_values():
    pred = np.array([1, 1, 0, 0, 1, 0])
    gold = np.array([1, 0, 0, 1, 1, 0])
    # tp=2 fp=1 fn=1 tn=2: F1 = 4/6, MCC = (4-1)/sqrt(3*3*3*3) = 1/3
    assert f1_binary(pred, gold) == pytest.approx(2 / 3)
    assert matthews(pred, gold) == pytest.approx(1 / 3)
    assert matthews(np.ones(4, int), np.array([1, 0, 1, 0])) == 0.0
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([2.0, 4.0, 5.0, 4.0])
    # Pearson by hand: dx=(-1.5,-.5,.5,1.5) dy=(-1.75,.25,1.25,.25): sxy=3.5 sxx=5 syy=4.75
    assert pearson(x, y) == pytest.approx(3.5 / np.sqrt(5 * 4.75))
    # Spearman with ties: ranks y = (1, 2.5, 4, 2.5)
    ry = np.array([1, 2.5, 4, 2.5])
    assert spearman(x, y) == pytest.approx(pearson(np.array([1, 2, 3, 4.0]), ry))
    m = compute_metrics("sts-b", x.reshape(-1, 1), y)
    assert m["select"] == pytest.approx((m["pearson"] + m["spearman"]) / 2)
    m = compute_metrics("mrpc", np.eye(2)[pred], gold)
    assert m["select"] == m["f1"] and m["acc"] == pytest.approx(4 / 6)


def test_qqp_and_mnli_layouts(tmp_path):
    """No QQP/MNLI files here: synthetic rows in the real column layouts."""
    qqp = _write(tmp_path / "QQP" / "train.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                                                  "7\t1\t2\tHow?\tWhy?\t1\n")
    ex = read_examples(str(qqp), get_task("qqp"))
    assert (ex[0].text_a, ex[0].text_b, ex[0].label) == ("How?", "Why?", 1.0)
    head = ["index", "promptID", "pairID", "genre", "s1b", "s2b", "s1p", "s2p", "sentence1", "sentence2"]
    dev = head + ["label1", "label2", "label3", "label4", "label5", "gold_label"]
    row = ["0", "1", "2", "g", "x", "x", "x", "x", "A man.", "A person."] + ["neutral"] * 5 + ["contradiction"]
    mnli = _write(tmp_path / "MNLI" / "dev_mismatched.tsv", "\t".join(dev) + "\n" + "\t".join(row) + "\n")
    ex = read_examples(str(mnli), get_task("mnli-mm"))
    assert (ex[0].text_a, ex[0].text_b, ex[0].label) == ("A man.", "A person.", 0.0)  # contradiction = 0
    assert get_task("MNLI").dev_file == "dev_matched.tsv"


def test_truncated_or_damaged_record_files_are_refused_by_name(tmp_path):
    """meta.json lists every record file's size and SHA-256: a truncated or flipped file is named
    before MindSpore's reader sees it (which would fail deep in its C++ with no file name)."""
    from conftest import synthetic_glue
    from src.dataset import check_records, create_dataset
    from src.glue import DataError, convert
    glue = synthetic_glue(str(tmp_path / "glue"), n_train=20, n_dev=10)
    convert("sst-2", glue, VOCAB, str(tmp_path / "data"), 16, progress=False)
    check_records(str(tmp_path / "data"), "sst-2")  # intact
    path = tmp_path / "data" / "dev.mindrecord"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="dev.mindrecord: .* bytes.*truncated"):
        check_records(str(tmp_path / "data"), "sst-2")
    with pytest.raises(DataError, match="dev.mindrecord: .* bytes.*truncated"):
        create_dataset(str(tmp_path / "data"), "dev", "sst-2", 4)
    mid = len(good) // 2
    path.write_bytes(good[:mid] + bytes([good[mid] ^ 1]) + good[mid + 1:])
    with pytest.raises(DataError, match="dev.mindrecord: checksum mismatch"):
        check_records(str(tmp_path / "data"), "sst-2")


def test_invalid_utf8_names_file_and_line(tmp_path):
    d = tmp_path / "SST-2"
    d.mkdir()
    (d / "dev.tsv").write_bytes(b"sentence\tlabel\ngood film\t1\nbad \xff film\t0\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: not valid UTF-8 \(byte 0xff at column 5\)"):
        read_examples(str(d / "dev.tsv"), get_task("sst-2"))
