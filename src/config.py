"""Typed configuration for TernaryBERT.

Four dataclasses, each validated in ``__post_init__``:

* ``BertConfig``    - the architecture (what a checkpoint's tensors look like).
* ``QuantConfig``   - what is quantized and how (weights, embedding, activations).
* ``DistillConfig`` - the weights of the distillation loss terms.
* ``TrainConfig``   - the optimisation schedule.

``RunConfig`` bundles them with the task name and is written as JSON beside every
checkpoint, so evaluation and export rebuild the network without restating anything.

``TASKS`` is the one task table every entry point uses.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

FORMAT_VERSION = 1


class ConfigError(ValueError):
    """A configuration value is out of range or inconsistent."""


def _check(problems: List[str], cls_name: str) -> None:
    if problems:
        raise ConfigError(f"invalid {cls_name}: " + "; ".join(problems))


def _from_dict(cls, data: dict, where: str):
    """Build a dataclass from a dict, refusing unknown keys (they mean a format mismatch)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown {cls.__name__} keys {unknown}")
    return cls(**data)


@dataclass
class BertConfig:
    """BERT architecture, numerically equal to Hugging Face ``BertModel``."""
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    num_labels: int = 2  # 1 means a regression head (STS-B)

    def __post_init__(self):
        p = []
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels"):
            if int(getattr(self, name)) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % max(self.num_attention_heads, 1):
            p.append(f"hidden_size {self.hidden_size} is not a multiple of "
                     f"num_attention_heads {self.num_attention_heads}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                p.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.hidden_act != "gelu":
            p.append(f"hidden_act {self.hidden_act!r} is not supported (only erf 'gelu')")
        _check(p, "BertConfig")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, hf: dict, num_labels: Optional[int] = None) -> "BertConfig":
        """From a Hugging Face ``config.json`` dict."""
        if hf.get("model_type", "bert") != "bert":
            raise ConfigError(f"model_type {hf.get('model_type')!r} is not a BERT")
        act = hf.get("hidden_act", "gelu")
        if act != "gelu":
            raise ConfigError(f"hidden_act {act!r} is not supported (only erf 'gelu')")
        if num_labels is None:
            num_labels = len(hf["id2label"]) if "id2label" in hf else 2
            if hf.get("problem_type") == "regression":
                num_labels = 1
        return cls(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                   num_hidden_layers=hf["num_hidden_layers"],
                   num_attention_heads=hf["num_attention_heads"],
                   intermediate_size=hf["intermediate_size"],
                   max_position_embeddings=hf["max_position_embeddings"],
                   type_vocab_size=hf.get("type_vocab_size", 2),
                   hidden_dropout_prob=hf.get("hidden_dropout_prob", 0.1),
                   attention_probs_dropout_prob=hf.get("attention_probs_dropout_prob", 0.1),
                   layer_norm_eps=hf.get("layer_norm_eps", 1e-12), num_labels=num_labels)


ACT_MODES = ("symmetric", "asymmetric_ema", "learned")


@dataclass
class QuantConfig:
    """What is quantized, and how. All 32 means the float model, exactly."""
    weight_bits: int = 2          # Q/K/V, attention output, FFN in/out, pooler
    embedding_bits: int = 2       # word embedding only
    act_bits: int = 8             # inputs of quantized matmuls (32 = off)
    ternarizer: str = "twn"       # twn | lat (loss-aware, uses Adam's second moment)
    embedding_granularity: str = "row"  # row: one scale per token; layer: one per table
    weight_clip: float = 2.5      # weights are clipped to [-c, c] before quantizing
    ste_mask: bool = True         # zero the STE gradient where |w| > c
    act_mode: str = "symmetric"   # symmetric (per-batch max-abs) | asymmetric_ema | learned
    act_clip: float = 2.5         # symmetric clip; initial +-range of the EMA observer / learned clip
    # 0.99, not the paper's 0.999: a range forgets its +-act_clip start after ~1/(1 - decay)
    # steps, and a small task's whole run is a few hundred steps (STS-B: 537; measured in README)
    act_ema_decay: float = 0.99
    # learned clips train at learning_rate x this: Adam moves a parameter by about its learning
    # rate per step, so at the weights' 1e-4 a clip of 2.5 would move by < 0.1 in a whole run
    act_clip_lr_scale: float = 10.0
    lat_iters: int = 10
    lat_eps: float = 1e-6
    # True for a network rebuilt from a packed file: its weights already hold q(w), so the
    # weight quantizers are left out (activation fake-quant stays).
    weights_prequantized: bool = False

    def __post_init__(self):
        p = []
        if self.weight_bits not in (2, 8, 32):
            p.append(f"weight_bits must be 2, 8 or 32, got {self.weight_bits}")
        if self.embedding_bits not in (2, 8, 32):
            p.append(f"embedding_bits must be 2, 8 or 32, got {self.embedding_bits}")
        if self.act_bits not in (8, 32):
            p.append(f"act_bits must be 8 or 32, got {self.act_bits}")
        if self.ternarizer not in ("twn", "lat"):
            p.append(f"ternarizer must be 'twn' or 'lat', got {self.ternarizer!r}")
        if self.embedding_granularity not in ("row", "layer"):
            p.append(f"embedding_granularity must be 'row' or 'layer', got "
                     f"{self.embedding_granularity!r}")
        if self.act_mode not in ACT_MODES:
            p.append(f"act_mode must be one of {', '.join(ACT_MODES)}, got {self.act_mode!r}")
        if not self.act_clip_lr_scale > 0:
            p.append(f"act_clip_lr_scale must be > 0, got {self.act_clip_lr_scale}")
        if not self.weight_clip > 0 or not self.act_clip > 0:
            p.append("weight_clip and act_clip must be > 0")
        if not 0.0 < self.act_ema_decay < 1.0:
            p.append(f"act_ema_decay must be in (0, 1), got {self.act_ema_decay}")
        if self.lat_iters < 1:
            p.append(f"lat_iters must be >= 1, got {self.lat_iters}")
        _check(p, "QuantConfig")

    @classmethod
    def full_precision(cls) -> "QuantConfig":
        return cls(weight_bits=32, embedding_bits=32, act_bits=32)

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "QuantConfig":
        """``"2-2-8"`` = weight-embedding-activation bits, as in the paper's tables."""
        try:
            w, e, a = (int(x) for x in preset.split("-"))
        except ValueError:
            raise ConfigError(f"quant preset {preset!r} is not of the form W-E-A, e.g. 2-2-8")
        return cls(weight_bits=w, embedding_bits=e, act_bits=a, **overrides)

    @property
    def is_float(self) -> bool:
        return self.weight_bits == 32 and self.embedding_bits == 32 and self.act_bits == 32

    @property
    def name(self) -> str:
        return f"{self.weight_bits}-{self.embedding_bits}-{self.act_bits}"


ATTENTION_LOSSES = ("mse", "kl")


@dataclass
class DistillConfig:
    """Weights of the distillation loss terms (the paper: all 1, no gold-label term)."""
    hidden_weight: float = 1.0
    attention_weight: float = 1.0
    pred_weight: float = 1.0
    label_weight: float = 0.0
    regression_target: str = "teacher"  # teacher | label (what the STS-B prediction MSE targets)
    # False (the paper): hidden and attention MSE are means over every position of the padded
    # batch, so their weight shrinks as padding grows. True: means over real tokens only (and
    # real query x key pairs), the same whatever the padding: what --bucket_width needs.
    token_mean: bool = False
    # What the attention term compares: "mse" (the paper) the scores, with padded keys left out;
    # "kl" the probabilities, KL(teacher || student) per query row summed over its keys (Kim et
    # al. 2022 report it closer to the teacher for ternary students); it is already independent
    # of padded keys (their probabilities are 0 in both).
    attention_loss: str = "mse"

    @property
    def uses_teacher(self) -> bool:
        """False for the no-distillation ablation (gold labels only)."""
        return self.hidden_weight + self.attention_weight + self.pred_weight > 0

    @property
    def uses_gold_labels(self) -> bool:
        """True when some loss term reads the records' labels (not allowed on augmented copies)."""
        return self.label_weight > 0 or (self.pred_weight > 0 and self.regression_target == "label")

    def __post_init__(self):
        p = []
        for name in ("hidden_weight", "attention_weight", "pred_weight", "label_weight"):
            if getattr(self, name) < 0:
                p.append(f"{name} must be >= 0")
        if self.attention_loss not in ATTENTION_LOSSES:
            p.append(f"attention_loss must be one of {', '.join(ATTENTION_LOSSES)}, got {self.attention_loss!r}")
        if self.regression_target not in ("teacher", "label"):
            p.append(f"regression_target must be 'teacher' or 'label', got "
                     f"{self.regression_target!r}")
        if self.hidden_weight + self.attention_weight + self.pred_weight + self.label_weight <= 0:
            p.append("at least one loss weight must be > 0")
        _check(p, "DistillConfig")


COMPUTE_TYPES = ("fp32", "fp16")
BUCKET_GRAPHS = ("open", "static")


@dataclass
class TrainConfig:
    """Optimisation schedule (AdamW, linear warm-up then linear decay)."""
    learning_rate: float = 2e-5
    epochs: float = 3.0
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    adam_eps: float = 1e-6
    clip_norm: float = 1.0
    seed: int = 42
    eval_steps: int = 0           # 0: evaluate once per epoch
    max_seq_length: int = 128
    max_steps: int = 0            # > 0 caps the run (smoke tests, quick demos)
    # 0: every training batch is padded to max_seq_length. w > 0: batches of similar length,
    # each cut to the smallest multiple of w that holds its longest example (see dataset.py).
    bucket_width: int = 0
    # with bucket_width: "open" compiles one training graph with the length left open (the
    # memory of one graph); "static" one graph per length, each keeping its own memory, with
    # faster steps on CPU (1.3-1.7x, docs/performance.md): for runs with few lengths
    bucket_graphs: str = "open"
    # > 0: every N steps the network goes to ckpt/step-<N>.ckpt (the newest keep_ckpt_max kept)
    # and the training state is saved, so an interruption loses at most N steps
    save_ckpt_steps: int = 0
    keep_ckpt_max: int = 5
    # fp16: the matrix products of training (student and teacher) run in float16 with a dynamic
    # loss scale; quantizers, LayerNorm, softmax, losses and the optimizer stay float32
    compute_type: str = "fp32"
    loss_scale: float = 65536.0    # fp16: initial loss scale (halved at every overflow, the step skipped)
    loss_scale_window: int = 1000  # fp16: steps without overflow before the scale doubles

    def __post_init__(self):
        p = []
        if self.compute_type not in COMPUTE_TYPES:
            p.append(f"compute_type must be one of {', '.join(COMPUTE_TYPES)}, got {self.compute_type!r}")
        if not self.loss_scale >= 1 or self.loss_scale_window < 1:
            p.append(f"loss_scale must be >= 1 and loss_scale_window >= 1, got {self.loss_scale} and "
                     f"{self.loss_scale_window}")
        if not self.learning_rate > 0:
            p.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.epochs > 0:
            p.append(f"epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1:
            p.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.warmup_ratio < 1:
            p.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.eval_steps < 0 or self.max_steps < 0:
            p.append("eval_steps and max_steps must be >= 0")
        if self.max_seq_length < 8:
            p.append(f"max_seq_length must be >= 8, got {self.max_seq_length}")
        if self.bucket_width < 0:
            p.append(f"bucket_width must be >= 0, got {self.bucket_width}")
        if self.bucket_graphs not in BUCKET_GRAPHS:
            p.append(f"bucket_graphs must be one of {', '.join(BUCKET_GRAPHS)}, got {self.bucket_graphs!r}")
        if self.save_ckpt_steps < 0 or self.keep_ckpt_max < 1:
            p.append(f"save_ckpt_steps must be >= 0 and keep_ckpt_max >= 1, got {self.save_ckpt_steps} "
                     f"and {self.keep_ckpt_max}")
        _check(p, "TrainConfig")


@dataclass
class AugmentConfig:
    """Training-set augmentation for distillation (src/augment.py), recorded in meta.json."""
    copies: int = 4               # altered copies per training example (at most)
    replace_prob: float = 0.4     # chance that a swappable word is replaced (TinyBERT's 0.4)
    neighbours: int = 15          # replacements drawn from a word's nearest words (TinyBERT's K)
    seed: int = 0

    def __post_init__(self):
        p = []
        if self.copies < 1:
            p.append(f"copies must be >= 1, got {self.copies}")
        if not 0 < self.replace_prob <= 1:
            p.append(f"replace_prob must be in (0, 1], got {self.replace_prob}")
        if self.neighbours < 1:
            p.append(f"neighbours must be >= 1, got {self.neighbours}")
        _check(p, "AugmentConfig")


# Evaluation batch of the entry points and of the library alike: with per-batch activation ranges
# (act_mode "symmetric", the default) a quantized model's dev metric depends on its batch, and every
# number in the docs was measured at 32.
EVAL_BATCH_SIZE = 32
DEFAULT_DISTILL_LR = 1e-4  # best measured on STS-B, MRPC and SST-2 (README, "Results")
DEFAULT_DISTILL_EPOCHS = 3.0  # the paper's GLUE budget; tasks that measured better differ below


@dataclass
class TaskSpec:
    """One row of the task table."""
    name: str                      # canonical name used by every entry point
    folder: str                    # GLUE folder name
    labels: Optional[Tuple[str, ...]]  # None = regression
    metrics: Tuple[str, ...]
    select: str                    # metric that picks the best checkpoint
    columns: Tuple[int, Optional[int], int] = (1, 2, 3)  # text_a, text_b, label (-1 = last)
    header: bool = True            # CoLA's files have no header line
    num_columns: int = 0           # fields per row when there is no header
    max_seq_length: int = 128
    batch_size: int = 32
    # train.py's peak learning rate when --learning_rate is not given: the best measured on the
    # MiniLM-L6 student per task (README, "Results"). Fine-tuning keeps its own 5e-5.
    distill_lr: float = DEFAULT_DISTILL_LR
    # train.py's epochs when --epoch_size is not given: the budget of the task's measured default
    # recipe (docs/results.md): a small dev set's student needs more steps than the paper's 3 epochs
    distill_epochs: float = DEFAULT_DISTILL_EPOCHS
    # train.py's --bucket_width when not given: 0 pads every batch to the records' length; w > 0
    # trains on length buckets and, unless --no_token_mean, with the token-mean loss that buckets
    # need. STS-B and CoLA measured better and faster on buckets of 16 (docs/results.md).
    distill_bucket_width: int = 0
    # train.py's --eval_step when not given (0: once per epoch). SST-2's one epoch and CoLA's
    # 12 short ones peak between epoch ends, so they evaluate at a fixed step interval.
    distill_eval_steps: int = 0
    dev_file: str = "dev.tsv"
    # further dev sets (split name, file), converted and evaluated beside dev: MNLI's mismatched
    # set, whose metrics are reported as mm_<metric> (the model is selected on dev)
    extra_dev: Tuple[Tuple[str, str], ...] = ()

    @property
    def split_files(self) -> Dict[str, str]:
        """Every split the converter knows for this task -> its file in the task folder."""
        return {"train": "train.tsv", "dev": self.dev_file, **dict(self.extra_dev)}

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


_B = ("0", "1")
_ENT = ("entailment", "not_entailment")
_NLI = ("contradiction", "entailment", "neutral")
TASKS: Dict[str, TaskSpec] = {t.name: t for t in [
    TaskSpec("cola", "CoLA", _B, ("mcc",), "mcc", columns=(3, None, 1), header=False,
             num_columns=4, max_seq_length=64, batch_size=16, distill_epochs=12, distill_bucket_width=16,
             distill_eval_steps=200),
    TaskSpec("sst-2", "SST-2", _B, ("acc",), "acc", columns=(0, None, 1), max_seq_length=64,
             distill_epochs=1, distill_eval_steps=300),
    TaskSpec("mrpc", "MRPC", _B, ("f1", "acc"), "f1", columns=(3, 4, 0), distill_epochs=6),
    TaskSpec("sts-b", "STS-B", None, ("pearson", "spearman", "corr"), "corr", columns=(7, 8, 9),
             distill_bucket_width=16),
    TaskSpec("qqp", "QQP", _B, ("acc", "f1"), "acc", columns=(3, 4, 5)),
    TaskSpec("mnli", "MNLI", _NLI, ("acc",), "acc", columns=(8, 9, -1),
             dev_file="dev_matched.tsv", extra_dev=(("dev_mm", "dev_mismatched.tsv"),)),
    # the mismatched set alone as the dev split (older record folders); mnli reports both
    TaskSpec("mnli-mm", "MNLI", _NLI, ("acc",), "acc", columns=(8, 9, -1),
             dev_file="dev_mismatched.tsv"),
    TaskSpec("qnli", "QNLI", _ENT, ("acc",), "acc"),
    TaskSpec("rte", "RTE", _ENT, ("acc",), "acc", distill_lr=5e-5),
    TaskSpec("wnli", "WNLI", _B, ("acc",), "acc"),
]}


def get_task(name: str) -> TaskSpec:
    """Look a task up by its canonical name (case-insensitive); unknown names are an error."""
    key = name.strip().lower()
    if key not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[key]


@dataclass
class RunConfig:
    """Everything needed to rebuild a checkpoint's network, saved as JSON beside it."""
    task: str
    model: BertConfig
    quant: QuantConfig = field(default_factory=QuantConfig)
    distill: Optional[DistillConfig] = None
    train: Optional[TrainConfig] = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        spec = get_task(self.task)
        if spec.num_labels != self.model.num_labels:
            raise ConfigError(f"task {self.task} has {spec.num_labels} label(s) but the model "
                              f"head has {self.model.num_labels}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "RunConfig":
        d = dict(d)
        version = d.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ConfigError(f"{where}: format_version {version} is not {FORMAT_VERSION}")
        missing = {"task", "model"} - set(d)
        if missing:
            raise ConfigError(f"{where}: missing keys {sorted(missing)}")
        unknown = set(d) - {"task", "model", "quant", "distill", "train"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
        return cls(task=d["task"], model=_from_dict(BertConfig, d["model"], where),
                   quant=_from_dict(QuantConfig, d.get("quant") or {}, where),
                   distill=(_from_dict(DistillConfig, d["distill"], where)
                            if d.get("distill") is not None else None),
                   train=(_from_dict(TrainConfig, d["train"], where)
                          if d.get("train") is not None else None))

    def save(self, path: str) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str) -> "RunConfig":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path} does not exist (it is written beside "
                                    f"every checkpoint as <checkpoint>.json)")
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(data, where=path)


def config_path_for(ckpt_path: str) -> str:
    """The JSON written beside a checkpoint: ``x.ckpt`` -> ``x.json``."""
    root, _ = os.path.splitext(ckpt_path)
    return root + ".json"


def vocab_path_for(model_path: str) -> str:
    """The tokenizer vocabulary of a model file: ``vocab.txt`` in its folder (import_hf.py, training
    and export.py put it there; predict.py reads it from there)."""
    return os.path.join(os.path.dirname(os.path.abspath(model_path)), "vocab.txt")


def copy_vocab(src: str, folder: str) -> str:
    """``src`` as ``folder/vocab.txt``, atomically (nothing when it already is that file); the path."""
    dst = os.path.join(folder, "vocab.txt")
    if os.path.abspath(src) != os.path.abspath(dst):
        with open(src, "rb") as f:
            atomic_write_bytes(dst, f.read())
    return dst


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write to a temporary name, then rename: an interruption never leaves half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
