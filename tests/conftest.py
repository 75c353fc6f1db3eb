import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared"))
GLUE = os.path.join(SHARED, "data", "glue")
TEACHERS = os.path.join(SHARED, "models", "teachers")

import mindspore as ms  # noqa: E402

from src.checkpoint import default_backbone_dir  # noqa: E402
from src.config import BertConfig  # noqa: E402

# The uncased WordPiece vocabulary of the packaged backbone (a declared dependency), so that
# tokenizer and converter tests run without ../shared.
VOCAB = os.path.join(default_backbone_dir(), "vocab.txt")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes of CPU; run in CI")


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.fixture
def graph():
    ms.set_context(mode=ms.GRAPH_MODE)
    yield


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory):
    """The real GLUE folder (../shared) when present, else generated data in its layout (STS-B and
    SST-2, see synthetic_glue): the end-to-end tests run on a fresh clone too."""
    if os.path.isdir(GLUE):
        return GLUE
    return synthetic_glue(str(tmp_path_factory.mktemp("glue")), n_train=96, n_dev=64)


def tiny_config(num_labels=2, dropout=0.0, layers=2):
    return BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=32, type_vocab_size=2,
                      hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                      num_labels=num_labels)


def tiny_batch(rng, b=3, s=10, vocab=60):
    ids = rng.randint(0, vocab, (b, s)).astype(np.int32)
    lens = np.array([s, s - 3, s - 6][:b] + [s] * max(0, b - 3))
    mask = (np.arange(s)[None, :] < lens[:, None]).astype(np.int32)
    seg = (np.arange(s)[None, :] >= (lens[:, None] // 2)).astype(np.int32) * mask
    return ids, mask, seg


def randomize(net, rng, scale=0.5):
    """Give every float parameter random values (LayerNorm near 1) so tests are not trivial."""
    from src.checkpoint import quant_state_names
    state = quant_state_names(net)  # activation ranges, clips, LAT curvature keep their initial values
    for n, p in net.parameters_and_names():
        if n in state:
            continue
        shape = tuple(p.shape)
        if n.endswith("LayerNorm.weight"):
            v = 1.0 + 0.1 * rng.randn(*shape)
        else:
            v = scale * rng.randn(*shape)
        p.set_data(ms.Tensor(v.astype(np.float32)))


def minilm_slice(folder, layers=2):
    """The first ``layers`` layers of all-MiniLM-L6-v2 (the package) as a Hugging Face folder:
    a small real backbone for end-to-end tests."""
    import json
    from safetensors.numpy import load_file, save_file
    src = default_backbone_dir()
    tensors = {k: v for k, v in load_file(os.path.join(src, "model.safetensors")).items()
               if not k.startswith("encoder.layer.") or int(k.split(".")[2]) < layers}
    os.makedirs(folder, exist_ok=True)
    save_file(tensors, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg["num_hidden_layers"] = layers
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(src, "vocab.txt"), "rb") as f, open(os.path.join(folder, "vocab.txt"), "wb") as g:
        g.write(f.read())
    return folder


_WORDS = ("the a film story actor plot scene music cast movie book song play show it this that was is "
          "very quite rather truly not really so too more less").split()
_POS, _NEG = ("good great fine lovely brilliant warm funny moving".split(),
              "bad dull poor awful boring weak flat tedious".split())


def synthetic_glue(root, n_train=96, n_dev=40, seed=0):
    """A small GLUE-layout folder (SST-2 and STS-B) of generated sentences, so that the end-to-end
    tests run on a fresh clone without the real GLUE files. Labels follow the words (SST-2: more
    positive than negative words; STS-B: word overlap of the pair), so a model can learn them."""
    rng = np.random.RandomState(seed)

    def sentence():
        words = list(rng.choice(_WORDS, rng.randint(3, 9)))
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randint(len(words) + 1), rng.choice(_POS if rng.rand() < 0.5 else _NEG))
        return " ".join(words)

    os.makedirs(os.path.join(root, "SST-2"), exist_ok=True)
    os.makedirs(os.path.join(root, "STS-B"), exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        with open(os.path.join(root, "SST-2", f"{split}.tsv"), "w") as f:
            f.write("sentence\tlabel\n")
            for _ in range(n):
                s = sentence()
                score = sum(w in _POS for w in s.split()) - sum(w in _NEG for w in s.split())
                f.write(f"{s}\t{int(score > 0 or (score == 0 and rng.rand() < 0.5))}\n")
        with open(os.path.join(root, "STS-B", f"{split}.tsv"), "w") as f:
            f.write("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n")
            for i in range(n):
                a = sentence()
                b = a if rng.rand() < 0.3 else sentence()
                wa, wb = set(a.split()), set(b.split())
                score = 5.0 * len(wa & wb) / len(wa | wb)
                f.write(f"{i}\tmain-forums\tsynthetic\t2026\t{i}\tnone\tnone\t{a}\t{b}\t{score:.3f}\n")
    return root
