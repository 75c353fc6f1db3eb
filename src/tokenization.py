"""BERT WordPiece tokenization from a vocab.txt, the way BERT does it.

Basic step: clean control characters, pad CJK ideographs with spaces, optional lower-casing
with accent stripping (NFD, drop combining marks), split on whitespace and punctuation.
WordPiece step: greedy longest-match-first with '##' continuations; a word longer than 100
characters, or one with no match, becomes [UNK].
"""
from __future__ import annotations

import os
import unicodedata
from typing import Dict, List, Tuple


def load_vocab(path: str) -> Dict[str, int]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vocab file {path} does not exist")
    vocab: Dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            token = line.rstrip("\n").rstrip("\r")
            if token in vocab:
                continue  # BERT vocabs have no duplicates; keep the first id if one does
            vocab[token] = i
    if not vocab:
        raise ValueError(f"vocab file {path} is empty")
    for special in ("[CLS]", "[SEP]", "[UNK]", "[PAD]"):
        if special not in vocab:
            raise ValueError(f"vocab file {path} has no {special} token")
    return vocab


def _is_whitespace(ch: str) -> bool:
    if ch in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(ch) in ("Cc", "Cf")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # ASCII non-alphanumerics count as punctuation even where Unicode says otherwise ("$", "^").
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class BertTokenizer:
    def __init__(self, vocab_file: str, do_lower_case: bool = True, max_chars_per_word: int = 100):
        self.vocab = load_vocab(vocab_file)
        self.do_lower_case = do_lower_case
        self.max_chars = max_chars_per_word
        self.unk = "[UNK]"

    # -- basic tokenization -------------------------------------------------
    def _clean(self, text: str) -> str:
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                out.append(" ")
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        return "".join(out)

    @staticmethod
    def _strip_accents(text: str) -> str:
        return "".join(c for c in unicodedata.normalize("NFD", text)
                       if unicodedata.category(c) != "Mn")

    @staticmethod
    def _split_punct(word: str) -> List[str]:
        pieces: List[str] = []
        cur = ""
        for ch in word:
            if _is_punctuation(ch):
                if cur:
                    pieces.append(cur)
                    cur = ""
                pieces.append(ch)
            else:
                cur += ch
        if cur:
            pieces.append(cur)
        return pieces

    def basic_tokenize(self, text: str) -> List[str]:
        words = []
        for word in self._clean(text).split():
            if self.do_lower_case:
                word = self._strip_accents(word.lower())
            words.extend(self._split_punct(word))
        return words

    # -- wordpiece ----------------------------------------------------------
    def wordpiece(self, word: str) -> List[str]:
        if len(word) > self.max_chars:
            return [self.unk]
        pieces = []
        start = 0
        while start < len(word):
            end = len(word)
            match = None
            while start < end:
                sub = word[start:end]
                if start > 0:
                    sub = "##" + sub
                if sub in self.vocab:
                    match = sub
                    break
                end -= 1
            if match is None:
                return [self.unk]
            pieces.append(match)
            start = end
        return pieces

    def tokenize(self, text: str) -> List[str]:
        return [p for w in self.basic_tokenize(text) for p in self.wordpiece(w)]

    def convert_tokens_to_ids(self, tokens: List[str]) -> List[int]:
        return [self.vocab[t] for t in tokens]


def truncate_pair(a: List[str], b: List[str], max_tokens: int) -> bool:
    """Longest-first truncation in place (pop from the longer, b on ties). True if cut."""
    cut = False
    while len(a) + len(b) > max_tokens:
        cut = True
        if len(a) > len(b):
            a.pop()
        else:
            b.pop()
    return cut


def encode_pair(tok: BertTokenizer, text_a: str, text_b, max_len: int) -> Tuple[List[int], List[int], List[int], bool]:
    """[CLS] a [SEP] (b [SEP]) -> (input_ids, input_mask, segment_ids, truncated), padded to max_len."""
    a = tok.tokenize(text_a)
    b = tok.tokenize(text_b) if text_b is not None else None
    if b is not None:
        cut = truncate_pair(a, b, max_len - 3)
    else:
        cut = len(a) > max_len - 2
        a = a[:max_len - 2]
    tokens = ["[CLS]"] + a + ["[SEP]"]
    segments = [0] * len(tokens)
    if b is not None:
        tokens += b + ["[SEP]"]
        segments += [1] * (len(b) + 1)
    ids = tok.convert_tokens_to_ids(tokens)
    mask = [1] * len(ids)
    pad = max_len - len(ids)
    pad_id = tok.vocab["[PAD]"]
    return ids + [pad_id] * pad, mask + [0] * pad, segments + [0] * pad, cut
