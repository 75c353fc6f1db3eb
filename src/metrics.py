"""GLUE metrics in numpy: accuracy, F1, Pearson, Spearman, Matthews correlation."""
from __future__ import annotations

from typing import Dict

import numpy as np

from .config import get_task


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(np.mean(pred == gold))


def f1_binary(pred: np.ndarray, gold: np.ndarray) -> float:
    """F1 of the positive class 1."""
    tp = float(np.sum((pred == 1) & (gold == 1)))
    fp = float(np.sum((pred == 1) & (gold != 1)))
    fn = float(np.sum((pred != 1) & (gold == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews(pred: np.ndarray, gold: np.ndarray) -> float:
    tp = float(np.sum((pred == 1) & (gold == 1)))
    tn = float(np.sum((pred == 0) & (gold == 0)))
    fp = float(np.sum((pred == 1) & (gold == 0)))
    fn = float(np.sum((pred == 0) & (gold == 1)))
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if den == 0 else float((tp * tn - fp * fn) / den)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, np.float64) - np.mean(x)
    y = np.asarray(y, np.float64) - np.mean(y)
    den = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return 0.0 if den == 0 else float(np.sum(x * y) / den)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their mean rank (as Spearman's rho requires)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), np.float64)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(_average_ranks(x), _average_ranks(y))


def compute_metrics(task_name: str, logits: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """logits [N, num_labels], labels [N] -> the task's metrics (and ``select``)."""
    spec = get_task(task_name)
    labels = np.asarray(labels).reshape(-1)
    if spec.is_regression:
        pred = np.asarray(logits, np.float64).reshape(-1)
        p, s = pearson(pred, labels), spearman(pred, labels)
        out = {"pearson": p, "spearman": s, "corr": (p + s) / 2}
    else:
        pred = np.argmax(logits, axis=-1)
        labels = labels.astype(np.int64)
        table = {"acc": accuracy, "f1": f1_binary, "mcc": matthews}
        out = {m: table[m](pred, labels) for m in spec.metrics}
    out["select"] = out[spec.select]
    out["examples"] = int(len(labels))
    return out
