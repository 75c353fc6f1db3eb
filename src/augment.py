"""Training-set augmentation for distillation, built from the training set itself.

TinyBERT (and the TernaryBERT paper's GLUE results) distil on augmented training text: words
replaced by a BERT masked-LM's guesses or by GloVe neighbours, i.e. with outside models and
corpora. This variant uses nothing beyond the task's own training file and the backbone the
student already starts from: each word of a training sentence is, with probability
``replace_prob``, replaced by one of its ``neighbours`` nearest words (cosine similarity of the
backbone's word embeddings), where both the word and its replacements must be whole-word
WordPieces that occur in the training set. Dev data is never read.

A copy keeps its source's label only as a placeholder: replacing a word can change a sentence's
meaning or grammaticality, so a student must learn a copy from the teacher's outputs, never from
that label (train.py refuses gold-label loss terms on augmented records).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List

import numpy as np

from .config import AugmentConfig

logger = logging.getLogger(__name__)


def load_word_embeddings(hf_dir: str) -> np.ndarray:
    """The word-embedding table [V, H] of a Hugging Face BERT folder (model.safetensors)."""
    path = os.path.join(hf_dir, "model.safetensors")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (augmentation needs the backbone's "
                                f"word embeddings: a Hugging Face BERT folder)")
    from safetensors.numpy import load_file
    tensors = load_file(path)
    keys = [k for k in tensors if k.endswith("embeddings.word_embeddings.weight")]
    if len(keys) != 1:
        raise ValueError(f"{path}: expected one '*embeddings.word_embeddings.weight' tensor, "
                         f"found {keys or 'none'}")
    return tensors[keys[0]].astype(np.float32)


def candidate_words(texts: List[str], tok) -> List[str]:
    """Words of the texts that can be swapped: alphabetic, one whole WordPiece, sorted."""
    seen = set()
    for text in texts:
        seen.update(tok.basic_tokenize(text))
    return sorted(w for w in seen if w.isalpha() and w in tok.vocab)


def word_neighbours(words: List[str], vocab: Dict[str, int], emb: np.ndarray, k: int,
                    chunk: int = 1024) -> Dict[str, List[str]]:
    """Each word's k most cosine-similar other words of ``words`` (nearest first)."""
    k = min(k, len(words) - 1)
    if k < 1:
        return {}
    e = emb[np.array([vocab[w] for w in words])]  # [W, H]
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    out = {}
    for start in range(0, len(words), chunk):
        sim = e[start:start + chunk] @ e.T  # [c, W]
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf  # a word is not its own neighbour
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # [c, k], unordered
        order = np.argsort(-sim[rows[:, None], top], axis=1, kind="stable")
        for r, idx in zip(rows, np.take_along_axis(top, order, axis=1)):
            out[words[start + r]] = [words[j] for j in idx]
    return out


def replace_words(words: List[str], neighbours: Dict[str, List[str]], p: float,
                  rng: np.random.RandomState) -> str:
    """The words, each swappable one replaced with probability p, space-joined."""
    out = list(words)
    for i, w in enumerate(out):
        if w in neighbours and rng.random_sample() < p:
            out[i] = neighbours[w][rng.randint(len(neighbours[w]))]
    return " ".join(out)


def augment_examples(examples: list, tok, emb: np.ndarray, cfg: AugmentConfig) -> list:
    """The examples followed by up to ``cfg.copies`` altered copies of each (copies equal to
    their source are dropped). Deterministic for a given cfg.seed."""
    from dataclasses import replace
    texts = [t for ex in examples for t in (ex.text_a, ex.text_b) if t is not None]
    words = candidate_words(texts, tok)
    neighbours = word_neighbours(words, tok.vocab, emb, cfg.neighbours)
    rng = np.random.RandomState(cfg.seed)
    copies = []
    for ex in examples:
        wa = tok.basic_tokenize(ex.text_a)
        wb = None if ex.text_b is None else tok.basic_tokenize(ex.text_b)
        src = (" ".join(wa), None if wb is None else " ".join(wb))
        for _ in range(cfg.copies):
            a = replace_words(wa, neighbours, cfg.replace_prob, rng)
            b = None if wb is None else replace_words(wb, neighbours, cfg.replace_prob, rng)
            if (a, b) != src:
                copies.append(replace(ex, text_a=a, text_b=b))
    logger.info("augmentation: %d swappable words, %d copies of %d examples", len(words),
                len(copies), len(examples))
    return list(examples) + copies
