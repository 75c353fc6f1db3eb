"""GLUE tsv -> features -> MindRecord / TFRecord files.

    python scripts/convert_glue.py --task_name sts-b --data_dir ../shared/data/glue \
        --output_dir data/sts-b-128 --max_seq_length 128 --format mindrecord tfrecord

Reading follows the GLUE files exactly: tab-separated, csv quoting OFF, UTF-8 with an
optional byte-order mark (MRPC), a header line except for CoLA, labels in the task table's
order. Every row must have as many fields as the header (or the task's fixed count).

The output folder holds ``<split>.mindrecord`` (+ ``.db``), ``<split>.tfrecord`` and
``meta.json`` (task, max length, vocab hash, counts). It is written under a temporary name
and renamed when complete, so an interrupted conversion leaves nothing that looks finished.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from .config import AugmentConfig, TaskSpec, get_task, TASKS
from .logs import setup_logging
from .tokenization import BertTokenizer, encode_pair

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
FEATURES = ("input_ids", "input_mask", "segment_ids", "label_ids")


class DataError(ValueError):
    """Bad input data: the message names the file, line and what was expected."""


@dataclass
class Example:
    text_a: str
    text_b: Optional[str]
    label: float  # class index, or the regression score


def task_dir(data_dir: str, spec: TaskSpec) -> str:
    """``data_dir`` may be the GLUE root (holding ``STS-B/``) or the task folder itself."""
    sub = os.path.join(data_dir, spec.folder)
    if os.path.isdir(sub):
        return sub
    if os.path.isfile(os.path.join(data_dir, "train.tsv")) or \
            os.path.isfile(os.path.join(data_dir, spec.dev_file)):
        return data_dir
    raise FileNotFoundError(f"no {spec.folder} task folder in {data_dir} (expected "
                            f"{sub}/train.tsv and {sub}/{spec.dev_file})")


def split_file(data_dir: str, spec: TaskSpec, split: str) -> str:
    name = spec.split_files.get(split)
    if name is None:
        raise ValueError(f"unknown split {split!r} for {spec.name}; expected one of {', '.join(spec.split_files)}")
    path = os.path.join(task_dir(data_dir, spec), name)
    if not os.path.isfile(path):
        skip = (f"; to convert without it, pass --splits {' '.join(k for k in spec.split_files if k != split)}"
                if split not in ("train", "dev") else "")
        raise FileNotFoundError(f"{split} file {path} does not exist{skip}")
    return path


def read_examples(path: str, spec: TaskSpec) -> List[Example]:
    """Parse one GLUE tsv file with quoting off; any malformed row is an error."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {raw[e.start]:#04x} at column {col})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # trailing newline
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if not lines or (spec.header and len(lines) == 1):
        raise DataError(f"{path}: the file has no examples")
    start = 1 if spec.header else 0
    n_fields = len(lines[0].split("\t")) if spec.header else spec.num_columns
    a_col, b_col, y_col = spec.columns
    examples = []
    for i in range(start, len(lines)):
        fields = lines[i].split("\t")
        if len(fields) != n_fields:
            raise DataError(f"{path}:{i + 1}: expected {n_fields} tab-separated fields, "
                            f"found {len(fields)}")
        raw = fields[y_col].strip()
        if spec.is_regression:
            try:
                label = float(raw)
            except ValueError:
                raise DataError(f"{path}:{i + 1}: label {raw!r} is not a number") from None
        else:
            if raw not in spec.labels:
                raise DataError(f"{path}:{i + 1}: unknown label {raw!r}; expected one of "
                                f"{list(spec.labels)}")
            label = float(spec.labels.index(raw))
        examples.append(Example(fields[a_col], fields[b_col] if b_col is not None else None,
                                label))
    return examples


def featurize(examples: List[Example], tok: BertTokenizer, max_len: int, spec: TaskSpec,
              progress: bool = True):
    """Examples -> dict of arrays ([N, max_len] int32 x3, labels [N, 1]) and a truncation count."""
    from tqdm import tqdm
    n = len(examples)
    ids = np.zeros((n, max_len), np.int32)
    mask = np.zeros((n, max_len), np.int32)
    seg = np.zeros((n, max_len), np.int32)
    label_dtype = np.float32 if spec.is_regression else np.int32
    labels = np.zeros((n, 1), label_dtype)
    truncated = 0
    for i, ex in enumerate(tqdm(examples, desc="tokenize", unit="ex", disable=not progress,
                                mininterval=2.0)):
        a, m, s, cut = encode_pair(tok, ex.text_a, ex.text_b, max_len)
        ids[i], mask[i], seg[i] = a, m, s
        labels[i, 0] = ex.label
        truncated += int(cut)
    return {"input_ids": ids, "input_mask": mask, "segment_ids": seg, "label_ids": labels}, truncated


def write_mindrecord(path: str, feats: Dict[str, np.ndarray]) -> None:
    from mindspore.mindrecord import FileWriter
    label_type = "float32" if feats["label_ids"].dtype == np.float32 else "int32"
    writer = FileWriter(path, shard_num=1, overwrite=True)
    # The default header/page sizes make every file ~50 MB; GLUE rows are small.
    writer.set_header_size(1 << 16)
    writer.set_page_size(1 << 20)
    writer.add_schema({"input_ids": {"type": "int32", "shape": [-1]},
                       "input_mask": {"type": "int32", "shape": [-1]},
                       "segment_ids": {"type": "int32", "shape": [-1]},
                       "label_ids": {"type": label_type, "shape": [-1]}}, "glue")
    n = len(feats["label_ids"])
    rows = [{k: feats[k][i] for k in FEATURES} for i in range(n)]
    for i in range(0, n, 5000):
        writer.write_raw_data(rows[i:i + 5000])
    writer.commit()


def write_tfrecord(path: str, feats: Dict[str, np.ndarray]) -> None:
    from .tfrecord import write_examples  # TensorFlow's Example format, written without TensorFlow
    n = len(feats["label_ids"])
    write_examples(path, ({k: feats[k][i] for k in FEATURES} for i in range(n)))


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert(task_name: str, data_dir: str, vocab_file: str, output_dir: str, max_seq_length: int,
            formats=("mindrecord",), splits=None, do_lower_case: bool = True,
            max_position_embeddings: int = 512, overwrite: bool = False,
            limit: int = 0, progress: bool = True, augment: Optional[AugmentConfig] = None,
            embeddings_dir: Optional[str] = None, train_file: Optional[str] = None) -> dict:
    """Convert a GLUE task; returns the metadata written to ``<output_dir>/meta.json``.

    ``train_file``: the training examples come from this file instead of the task's train.tsv
    (e.g. TinyBERT's ``train_aug.tsv``, the paper's augmented data); it must have the columns
    and header of the task's train.tsv and gets the same checks.

    ``augment``: add altered copies of the training examples (src/augment.py), using the word
    embeddings of the Hugging Face folder ``embeddings_dir`` (its vocabulary must be
    ``vocab_file``'s)."""
    spec = get_task(task_name)
    splits = tuple(splits) if splits else tuple(spec.split_files)  # default: all (MNLI: train, dev, dev_mm)
    bad = [f for f in formats if f not in ("mindrecord", "tfrecord")]
    if bad or not formats:
        raise ValueError(f"unknown format(s) {bad}; expected mindrecord and/or tfrecord")
    if max_seq_length > max_position_embeddings:
        raise ValueError(f"max_seq_length {max_seq_length} is above the model's position limit "
                         f"{max_position_embeddings}")
    if max_seq_length < 8:
        raise ValueError(f"max_seq_length {max_seq_length} is too small (>= 8)")
    if not os.path.isfile(vocab_file):
        raise FileNotFoundError(f"vocab file {vocab_file} does not exist")
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(f"output folder {output_dir} exists; pass --overwrite to replace it")
    if train_file is not None:
        if "train" not in splits:
            raise ValueError(f"--train_file replaces the train split, which is not among the splits to convert "
                             f"({', '.join(splits)})")
        if not os.path.isfile(train_file):
            raise FileNotFoundError(f"train file {train_file} does not exist")
    paths = {s: train_file if s == "train" and train_file is not None else split_file(data_dir, spec, s)
             for s in splits}  # every input checked first
    tok = BertTokenizer(vocab_file, do_lower_case=do_lower_case)

    emb = None
    if augment is not None:
        from .augment import load_word_embeddings
        if "train" not in splits:
            raise ValueError("augmentation alters the train split, which is not among the splits "
                             f"to convert ({', '.join(splits)})")
        if embeddings_dir is None:
            raise ValueError("augmentation needs embeddings_dir (the backbone's Hugging Face folder)")
        own_vocab = os.path.join(embeddings_dir, "vocab.txt")
        if os.path.isfile(own_vocab) and sha256_file(own_vocab) != sha256_file(vocab_file):
            raise ValueError(f"{own_vocab} differs from {vocab_file}: the word embeddings must "
                             f"belong to the vocabulary the text is tokenized with")
        emb = load_word_embeddings(embeddings_dir)
        if emb.shape[0] != len(tok.vocab):
            raise ValueError(f"{embeddings_dir}: {emb.shape[0]} word embeddings but {vocab_file} has "
                             f"{len(tok.vocab)} words: not the same vocabulary")

    tmp = output_dir.rstrip("/") + f".partial{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    meta = {"task": spec.name, "max_seq_length": max_seq_length, "do_lower_case": do_lower_case,
            "vocab_sha256": sha256_file(vocab_file), "formats": list(formats), "splits": {}}
    try:
        for split, path in paths.items():
            examples = read_examples(path, spec)
            if limit:
                examples = examples[:limit]
            if split == "train" and emb is not None:
                from .augment import augment_examples
                examples = augment_examples(examples, tok, emb, augment)
                meta["augment"] = dict(dataclasses.asdict(augment),
                                       embeddings=os.path.abspath(embeddings_dir))
            feats, truncated = featurize(examples, tok, max_seq_length, spec, progress)
            if spec.is_regression:
                counts = {"min": float(feats["label_ids"].min()),
                          "max": float(feats["label_ids"].max())}
            else:
                c = Counter(int(v) for v in feats["label_ids"][:, 0])
                counts = {spec.labels[k]: c.get(k, 0) for k in range(len(spec.labels))}
            for fmt in formats:
                out = os.path.join(tmp, f"{split}.{fmt}")
                (write_mindrecord if fmt == "mindrecord" else write_tfrecord)(out, feats)
            meta["splits"][split] = {"source": os.path.abspath(path), "examples": len(examples),
                                     "truncated": truncated, "labels": counts}
            logger.info("%s %s: %d examples written, %d truncated to %d tokens, labels %s",
                        spec.name, split, len(examples), truncated, max_seq_length, counts)
        # size and SHA-256 of every record file: a truncated or damaged one is refused by name
        # (check_record_files) instead of failing deep inside the MindSpore reader
        meta["files"] = {name: {"bytes": os.path.getsize(os.path.join(tmp, name)),
                                "sha256": sha256_file(os.path.join(tmp, name))}
                         for name in sorted(os.listdir(tmp))}
        with open(os.path.join(tmp, META_FILE), "w") as f:
            json.dump(meta, f, indent=2)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def load_meta(records_dir: str) -> dict:
    path = os.path.join(records_dir, META_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: {records_dir} is not a folder written by "
                                f"scripts/convert_glue.py")
    with open(path) as f:
        return json.load(f)


def check_record_files(records_dir: str, names=None, hash_files: bool = True) -> None:
    """The record files (all, or ``names``) must have the size (and SHA-256) that meta.json lists.
    Folders converted before meta.json listed its files are not checked."""
    listed = load_meta(records_dir).get("files")
    if listed is None:
        return
    for name in (names if names is not None else sorted(listed)):
        path = os.path.join(records_dir, name)
        entry = listed.get(name)
        if entry is None:
            continue
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing (meta.json lists it)")
        size = os.path.getsize(path)
        if size != entry["bytes"]:
            raise DataError(f"{path}: {size} bytes, {entry['bytes']} when it was written: the file is truncated "
                            f"or was replaced; convert the task again")
        if hash_files and sha256_file(path) != entry["sha256"]:
            raise DataError(f"{path}: checksum mismatch: the file is corrupted; convert the task again")


def check_labels_usable(records_dir: str, reads_labels: bool) -> None:
    """A loss that reads labels must not train on augmented copies (their labels are their
    source's placeholders, see src/augment.py)."""
    if reads_labels and load_meta(records_dir).get("augment"):
        raise ValueError(f"{records_dir} holds augmented copies whose labels are placeholders: "
                         f"train on them only by distillation from the teacher (train.py with "
                         f"--label_weight 0 and --regression_target teacher)")


def default_vocab_file() -> str:
    from .checkpoint import default_backbone_dir
    return os.path.join(default_backbone_dir(), "vocab.txt")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Convert a GLUE task to MindRecord and/or TFRecord.")
    ap.add_argument("--task_name", required=True, help="one of: " + ", ".join(TASKS))
    ap.add_argument("--data_dir", required=True, help="GLUE root or the task folder")
    ap.add_argument("--vocab_file", default=None,
                    help="BERT vocab.txt (default: the MiniLM-L6 package's)")
    ap.add_argument("--output_dir", required=True)
    ap.add_argument("--max_seq_length", type=int, default=None,
                    help="default: the task table's (128; 64 for SST-2 and CoLA)")
    ap.add_argument("--format", nargs="+", default=["mindrecord"], choices=["mindrecord", "tfrecord"])
    ap.add_argument("--splits", nargs="+", default=None, choices=["train", "dev", "dev_mm"],
                    help="default: every split of the task (train dev; MNLI also dev_mm, the mismatched set)")
    ap.add_argument("--cased", action="store_true", help="do not lower-case (cased vocabularies)")
    ap.add_argument("--limit", type=int, default=0, help="keep the first N examples per split")
    ap.add_argument("--train_file", default=None,
                    help="training examples from this tsv instead of the task's train.tsv, in the same "
                         "layout (e.g. TinyBERT's train_aug.tsv, the paper's augmented data)")
    ap.add_argument("--overwrite", action="store_true")
    d = AugmentConfig()
    g = ap.add_argument_group("augmentation of the train split for distillation (src/augment.py)")
    g.add_argument("--augment_copies", type=int, default=0,
                   help="altered copies per training example (0: none); distil with --label_weight 0")
    g.add_argument("--augment_prob", type=float, default=d.replace_prob)
    g.add_argument("--augment_neighbours", type=int, default=d.neighbours)
    g.add_argument("--augment_seed", type=int, default=d.seed)
    g.add_argument("--hf_dir", default=None,
                   help="backbone whose word embeddings pick replacements (default: the MiniLM-L6 package)")
    args = ap.parse_args(argv)
    setup_logging(sys.stderr)
    spec = get_task(args.task_name)
    try:
        augment = embeddings_dir = None
        if args.augment_copies:
            augment = AugmentConfig(args.augment_copies, args.augment_prob, args.augment_neighbours,
                                    args.augment_seed)
            embeddings_dir = args.hf_dir or os.path.dirname(default_vocab_file())
        meta = convert(spec.name, args.data_dir, args.vocab_file or default_vocab_file(),
                       args.output_dir, args.max_seq_length or spec.max_seq_length,
                       formats=tuple(args.format), splits=args.splits,
                       do_lower_case=not args.cased, overwrite=args.overwrite, limit=args.limit,
                       augment=augment, embeddings_dir=embeddings_dir, train_file=args.train_file)
    except (DataError, FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        logger.error("%s", e)
        return 2
    print(json.dumps(meta["splits"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
