"""Training-set augmentation (src/augment.py): neighbours against a brute-force numpy reference
and a hand-made embedding, copies built only from the training set's words, the augmented
records, and the refusal of label-reading losses on them."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, VOCAB
from src.augment import augment_examples, candidate_words, word_neighbours
from src.config import AugmentConfig, ConfigError, DistillConfig, get_task
from src.glue import Example, check_labels_usable, convert, read_examples
from src.tokenization import BertTokenizer


def test_neighbours_of_a_hand_made_embedding():
    # 2-d embeddings: cat/dog point one way, car/truck another, tree away from all of them
    vocab = {"cat": 0, "dog": 1, "car": 2, "truck": 3, "tree": 4}
    emb = np.array([[1, 0.1], [2, 0.3], [0, 1], [0.1, 3], [-1, -1]], dtype=np.float32)
    # cosines with tree (by hand): cat -0.774, dog -0.804, car -0.707, truck -0.730
    assert word_neighbours(sorted(vocab), vocab, emb, k=2) == {
        "car": ["truck", "dog"], "cat": ["dog", "truck"], "dog": ["cat", "truck"],
        "tree": ["car", "truck"], "truck": ["car", "dog"]}


def test_neighbours_equal_a_brute_force_reference():
    rng = np.random.RandomState(0)
    words = [f"w{i}" for i in range(300)]
    vocab = {w: 2 * i + 1 for i, w in enumerate(words)}  # not the identity: rows are looked up
    emb = rng.randn(700, 16).astype(np.float32)
    nb = word_neighbours(words, vocab, emb, k=5, chunk=64)  # several chunks
    e = emb[[vocab[w] for w in words]].astype(np.float64)
    for i, w in enumerate(words):
        cos = [-np.inf if j == i else e[i] @ e[j] / np.linalg.norm(e[i]) / np.linalg.norm(e[j])
               for j in range(len(words))]
        assert nb[w] == [words[j] for j in np.argsort(cos)[::-1][:5]]


def test_copies_use_only_training_words_and_keep_label_and_order():
    tok = BertTokenizer(VOCAB)
    ex = [Example("The cat sat on the mat.", None, 1.0), Example("A dog ran home quickly.", None, 0.0),
          Example("John saw the red car.", "Mary bought a truck.", 1.0)]
    emb = np.random.RandomState(1).randn(len(tok.vocab), 8).astype(np.float32)
    out = augment_examples(ex, tok, emb, AugmentConfig(copies=3, replace_prob=0.5, neighbours=4, seed=3))
    assert out[:3] == ex and 3 < len(out) <= 3 + 9
    words = set(candidate_words([t for e in ex for t in (e.text_a, e.text_b) if t], tok))
    assert "." not in words and "the" in words
    nb = word_neighbours(sorted(words), tok.vocab, emb, 4)
    sources = [(tok.basic_tokenize(e.text_a), e.text_b and tok.basic_tokenize(e.text_b), e.label) for e in ex]

    def derived(copy_words, src_words):  # same length, every change a neighbour of the word it replaces
        return len(copy_words) == len(src_words) and all(
            o == n or (o in nb and n in nb[o]) for o, n in zip(src_words, copy_words))

    for c in out[3:]:
        a, b = c.text_a.split(), c.text_b and c.text_b.split()
        match = [lab for sa, sb, lab in sources if derived(a, sa) and (sb is None) == (b is None)
                 and (sb is None or derived(b, sb))]
        assert match and c.label in match, c
    again = augment_examples(ex, tok, emb, AugmentConfig(copies=3, replace_prob=0.5, neighbours=4, seed=3))
    assert again == out


def test_bad_augment_settings_are_refused():
    with pytest.raises(ConfigError, match="copies must be >= 1"):
        AugmentConfig(copies=0)
    with pytest.raises(ConfigError, match="replace_prob"):
        AugmentConfig(replace_prob=1.5)


def _tiny_glue(tmp_path):
    d = tmp_path / "glue" / "SST-2"
    d.mkdir(parents=True)
    train = ["sentence\tlabel", "a good movie .\t1", "a bad film .\t0", "the best movie ever\t1",
             "the worst film\t0"]
    (d / "train.tsv").write_text("\n".join(train) + "\n")
    (d / "dev.tsv").write_text("sentence\tlabel\na good film\t1\n")
    return str(tmp_path / "glue")


def _backbone_with_embeddings(tmp_path, rows):
    from safetensors.numpy import save_file
    hf = tmp_path / "hf"
    hf.mkdir()
    emb = np.random.RandomState(0).randn(rows, 8).astype(np.float32)
    save_file({"embeddings.word_embeddings.weight": emb}, str(hf / "model.safetensors"))
    return str(hf)


def test_augmented_records_and_label_reading_losses_refused(tmp_path):
    glue = _tiny_glue(tmp_path)
    n_vocab = sum(1 for _ in open(VOCAB, encoding="utf-8"))
    hf = _backbone_with_embeddings(tmp_path, n_vocab)
    cfg = AugmentConfig(copies=2, replace_prob=1.0, neighbours=2)
    meta = convert("sst-2", glue, VOCAB, str(tmp_path / "rec"), 16, augment=cfg, embeddings_dir=hf,
                   progress=False)
    # every word of these sentences is swappable and replace_prob is 1: every copy differs
    assert meta["splits"]["train"]["examples"] == 4 + 4 * 2 and meta["splits"]["dev"]["examples"] == 1
    assert meta["augment"]["copies"] == 2 and meta["augment"]["embeddings"] == hf
    assert meta["splits"]["train"]["labels"] == {"0": 6, "1": 6}
    with pytest.raises(ValueError, match="placeholders"):
        check_labels_usable(str(tmp_path / "rec"), reads_labels=True)
    check_labels_usable(str(tmp_path / "rec"), reads_labels=False)
    assert DistillConfig(label_weight=1).uses_gold_labels and not DistillConfig().uses_gold_labels
    assert DistillConfig(regression_target="label").uses_gold_labels
    # train.py refuses the gold-label term before it loads any network (the teacher path is fake)
    p = subprocess.run([sys.executable, "train.py", "--task_name", "sst-2", "--teacher_model", "none.ckpt",
                        "--data_dir", str(tmp_path / "rec"), "--output_dir", str(tmp_path / "out"),
                        "--label_weight", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, GLOG_v="3"))
    assert p.returncode == 2 and "placeholders" in p.stdout + p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "out").exists()
    # a vocabulary that does not match the embeddings is an error, and nothing is written
    (tmp_path / "s").mkdir()
    small = _backbone_with_embeddings(tmp_path / "s", 100)
    with pytest.raises(ValueError, match="not the same vocabulary"):
        convert("sst-2", glue, VOCAB, str(tmp_path / "rec2"), 16, augment=cfg, embeddings_dir=small)
    assert not (tmp_path / "rec2").exists()
    # embeddings whose folder carries another vocab.txt, or no train split to augment: refused
    (tmp_path / "hf" / "vocab.txt").write_text("[PAD]\n[UNK]\nfilm\n")
    with pytest.raises(ValueError, match="differs from"):
        convert("sst-2", glue, VOCAB, str(tmp_path / "rec3"), 16, augment=cfg, embeddings_dir=hf)
    with pytest.raises(ValueError, match="not among the splits"):
        convert("sst-2", glue, VOCAB, str(tmp_path / "rec3"), 16, splits=("dev",), augment=cfg,
                embeddings_dir=hf)
    assert not (tmp_path / "rec3").exists()
    # the command line answers a bad setting with one error line and exit code 2, writing nothing
    p = subprocess.run([sys.executable, "scripts/convert_glue.py", "--task_name", "sst-2", "--data_dir", glue,
                        "--output_dir", str(tmp_path / "rec4"), "--augment_copies", "-1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "copies must be >= 1" in p.stderr and not (tmp_path / "rec4").exists()


def test_convert_glue_cli_augments_cola(tmp_path):
    glue = os.path.join(ROOT, "..", "shared", "data", "glue")
    if not os.path.isdir(os.path.join(glue, "CoLA")):
        pytest.skip("../shared GLUE files not present")
    p = subprocess.run([sys.executable, "scripts/convert_glue.py", "--task_name", "cola", "--data_dir", glue,
                        "--output_dir", str(tmp_path / "rec"), "--limit", "200", "--augment_copies", "2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    meta = json.load(open(tmp_path / "rec" / "meta.json"))
    n = meta["splits"]["train"]["examples"]
    assert 200 < n <= 600 and meta["splits"]["dev"]["examples"] == 200 and "augment" in meta
    src = read_examples(os.path.join(glue, "CoLA", "train.tsv"), get_task("cola"))[:200]
    assert meta["splits"]["train"]["labels"]["1"] >= sum(e.label for e in src)  # copies keep labels
