"""Raw-text input and output of predict.py: strict reading, encoding, atomic writing."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import List, Optional, Tuple

import numpy as np

from .config import atomic_write_text
from .glue import DataError
from .tokenization import encode_pair

Example = Tuple[str, Optional[str]]


def _lines(path: str):
    """(line number, text) of a file or stdin, decoded strictly: bad UTF-8 names its line."""
    stream = sys.stdin.buffer if path == "-" else open(path, "rb")
    name = "<stdin>" if path == "-" else path
    try:
        for n, raw in enumerate(stream, 1):
            try:
                yield n, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(f"{name}:{n}: not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})") \
                    from None
    finally:
        if path != "-":
            stream.close()


def read_examples(path: str, skip_header: bool = False) -> List[Example]:
    """Every example of a .tsv / .jsonl file or stdin (tsv); any malformed line is an error."""
    if path != "-" and not os.path.isfile(path):
        raise FileNotFoundError(f"input file {path} does not exist")
    name = "<stdin>" if path == "-" else path
    jsonl = path.endswith((".jsonl", ".json"))
    examples: List[Example] = []
    fields = None
    for n, line in _lines(path):
        if n == 1 and skip_header and not jsonl:
            continue
        if not line.strip():
            raise DataError(f"{name}:{n}: empty line (every line is one example)")
        if jsonl:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{name}:{n}: not a JSON object ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{name}:{n}: expected a JSON object, got {type(obj).__name__}")
            if "text" in obj:
                ex = (obj["text"], None)
            elif "text_a" in obj:
                ex = (obj["text_a"], obj.get("text_b"))
            else:
                raise DataError(f"{name}:{n}: expected a key \"text\" (or \"text_a\" and \"text_b\"), got "
                                f"{sorted(obj)}")
            if not all(isinstance(t, str) for t in ex if t is not None):
                raise DataError(f"{name}:{n}: texts must be strings")
        else:
            parts = line.split("\t")
            if len(parts) > 2:
                raise DataError(f"{name}:{n}: {len(parts)} tab-separated fields; expected 1 (text) or 2 "
                                f"(text_a, text_b)")
            ex = (parts[0], parts[1] if len(parts) == 2 else None)
        pair = ex[1] is not None
        if fields is None:
            fields = pair
        elif fields != pair:
            raise DataError(f"{name}:{n}: {'a pair' if pair else 'one text'}, but the lines before hold "
                            f"{'pairs' if fields else 'single texts'}")
        if not ex[0].strip() or (pair and not ex[1].strip()):
            raise DataError(f"{name}:{n}: empty text")
        examples.append(ex)
    if not examples:
        raise DataError(f"{name}: no examples")
    return examples


def check_task_shape(examples: List[Example], task: str, pairs: bool, name: str) -> None:
    """A pair task (STS-B, MRPC, RTE ...) given single texts, or a single-sentence task (SST-2,
    CoLA) given pairs, would still get numbers, none of them meaningful: refused."""
    given = examples[0][1] is not None
    if given != pairs:
        raise DataError(f"{name}: the model is a {task} model, which reads "
                        + ("sentence pairs: every line needs two tab-separated texts (JSON: \"text_a\" and "
                           "\"text_b\")" if pairs else "one text per line, but the lines hold pairs"))


def encode(tok, examples: List[Example], max_len: int, dynamic_length: bool = False):
    """Examples -> input_ids, input_mask, segment_ids int32 [B, S] (S = max_len, or the longest)."""
    rows = [encode_pair(tok, a, b, max_len)[:3] for a, b in examples]
    ids, mask, seg = (np.array([r[k] for r in rows], np.int32) for k in range(3))
    if dynamic_length:
        s = int(mask.sum(axis=1).max())
        ids, mask, seg = ids[:, :s], mask[:, :s], seg[:, :s]
    return ids, mask, seg


def batches(tok, examples: List[Example], max_len: int, batch_size: int, dynamic_length: bool = False,
            by_length: bool = False):
    """(positions in ``examples``, input_ids, input_mask, segment_ids) per batch: in input order, or
    (by_length) the examples sorted by token count, so that each batch, cut to its longest example,
    holds little padding. Sorting changes which examples share a batch: only for models whose
    outputs do not depend on that (fixed activation ranges)."""
    if not by_length:
        for i in range(0, len(examples), batch_size):
            chunk = examples[i:i + batch_size]
            yield (range(i, i + len(chunk)),) + encode(tok, chunk, max_len, dynamic_length)
        return
    ids, mask, seg = encode(tok, examples, max_len)  # [N, max_len] each
    order = np.argsort(mask.sum(axis=1), kind="stable")
    for i in range(0, len(order), batch_size):
        pos = order[i:i + batch_size]
        s = int(mask[pos].sum(axis=1).max())
        yield pos, ids[pos, :s], mask[pos, :s], seg[pos, :s]


def examples_digest(examples: List[Example]) -> str:
    """SHA-256 of the examples as read (a file's or stdin's): what a resumed run must see again."""
    return hashlib.sha256(json.dumps(examples, ensure_ascii=False).encode("utf-8")).hexdigest()


class PredictionSink:
    """Where predict.py's output lines go, a batch at a time.

    Lines come in units of ``unit`` examples (a batch; or a window of batches sorted by length),
    written whole. stdout: each unit as soon as it is done. A file PATH: units appended (and
    flushed) to PATH.partial, beside PATH.partial.json, which names the run (``identity``: the
    examples' digest, the model, the options); at the end PATH.partial becomes PATH in one rename,
    so PATH is never half-written. An interrupted run keeps its finished units: ``resume``
    continues at the first missing one, after checking that the identity is the same. Units, not
    lines: with per-call activation ranges an example's output depends on the batch it is in, so
    a resumed run must form the same batches to write what an uninterrupted one would."""

    def __init__(self, path: str, identity: dict, unit: int, total: int, resume: bool = False):
        self.path, self.done, self._file = path, 0, None
        if path == "-":
            if resume:
                raise ValueError("--resume needs --output FILE: standard output keeps nothing to resume")
            return
        self.partial, self.sidecar = path + ".partial", path + ".partial.json"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if os.path.exists(self.partial) and not os.path.exists(self.sidecar):
            raise FileExistsError(f"{self.partial} exists but was not written by predict.py (no {self.sidecar}); "
                                  f"move it away")
        if os.path.exists(self.sidecar):
            if not resume:
                raise FileExistsError(f"{self.partial} holds the start of an interrupted run: pass --resume to "
                                      f"continue it, or delete {self.partial} and {self.sidecar}")
            self.done = self._reopen(identity, unit, total)
        elif resume:
            raise FileNotFoundError(f"--resume: no interrupted run to continue ({self.sidecar} does not exist)")
        else:
            atomic_write_text(self.sidecar, json.dumps(identity, indent=1, sort_keys=True))
            open(self.partial, "wb").close()
        self._file = open(self.partial, "ab")

    def _reopen(self, identity: dict, unit: int, total: int) -> int:
        """Check the run's identity; cut PATH.partial back to its last whole unit; its example count."""
        try:
            with open(self.sidecar) as f:
                saved = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{self.sidecar} is damaged ({e}): delete it and {self.partial} to start "
                             f"again") from None
        changed = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
        if changed:
            raise ValueError(f"--resume: the run in {self.partial} differs in "
                             + ", ".join(f"{k} (then {saved.get(k)!r}, now {identity.get(k)!r})" for k in changed)
                             + f"; delete {self.partial} and {self.sidecar} to start again")
        data = b""
        if os.path.exists(self.partial):  # absent if the run stopped between the two files' creation
            with open(self.partial, "rb") as f:
                data = f.read()
        lines = data.count(b"\n")  # a line cut off by the interruption has no newline yet
        keep = lines if lines >= total else lines // unit * unit
        if keep > total:
            raise ValueError(f"{self.partial} holds {lines} lines, more than the input's {total} examples")
        cut = 0
        for _ in range(keep):
            cut = data.index(b"\n", cut) + 1
        with open(self.partial, "ab") as f:  # created if absent
            f.truncate(cut)
        return keep

    def write(self, lines: List[str]) -> None:
        text = "".join(line + "\n" for line in lines)
        if self._file is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            self._file.write(text.encode("utf-8"))
            self._file.flush()  # in the OS's hands: a killed process keeps it
        self.done += len(lines)

    def finish(self) -> None:
        """Every batch is in: PATH.partial becomes PATH."""
        if self._file is None:
            return
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.path)
        os.remove(self.sidecar)

    def close(self) -> None:
        """Interrupted: keep what is written (flushed already) for --resume."""
        if self._file is not None and not self._file.closed:
            self._file.close()
