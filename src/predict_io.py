"""Raw-text input and output of predict.py: strict reading, encoding, atomic writing."""
from __future__ import annotations

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


def write_lines(path: str, lines: List[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_write_text(path, text)
