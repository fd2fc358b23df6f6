"""Detection-quality metrics shared by the evaluation scripts: AUROC, TPR at a fixed FPR, precision, recall."""

from __future__ import annotations

import numpy as np


def auroc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    # average ranks for ties
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def tpr_at_fpr(labels, scores, max_fpr: float = 0.01) -> float:
    """Highest true-positive rate over thresholds whose false-positive rate is <= max_fpr."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    best = 0.0
    for threshold in np.unique(scores):
        flagged = scores >= threshold
        fpr = (flagged & ~labels).sum() / max(1, (~labels).sum())
        if fpr <= max_fpr:
            best = max(best, (flagged & labels).sum() / max(1, labels.sum()))
    return float(best)


def precision_recall(labels, predicted) -> tuple[float, float]:
    labels, predicted = np.asarray(labels, bool), np.asarray(predicted, bool)
    tp = (labels & predicted).sum()
    precision = tp / predicted.sum() if predicted.sum() else float("nan")
    recall = tp / labels.sum() if labels.sum() else float("nan")
    return float(precision), float(recall)


def print_detection_metrics(labels, scores, predicted) -> None:
    """The four figures every evaluation reports, in one format: AUROC and TPR at 1% FPR from ``scores``,
    precision and recall from the detector's own decisions ``predicted``."""
    precision, recall = precision_recall(labels, predicted)
    for name, value in (("AUROC", auroc(labels, scores)), ("TPR @ 1% FPR", tpr_at_fpr(labels, scores, 0.01)),
                        ("precision", precision), ("recall", recall)):
        print(f"  {name:<14} {value:.4f}")
