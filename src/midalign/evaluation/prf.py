"""Precision, recall and F1 from counts, shared by the slot and JSON scorers."""

from __future__ import annotations


def prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    """Precision, recall and F1 as percentages.

    An empty denominator scores 100 when both sides are empty (nothing to find, nothing claimed)
    and 0 otherwise, so an all-`None` test set answered with `None` is perfect, not undefined.

    Example:
        >>> prf(1, 2, 1)
        (50.0, 100.0, 66.66666666666666)
    """
    precision = tp / n_pred if n_pred else float(n_gold == 0)
    recall = tp / n_gold if n_gold else float(n_pred == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return 100 * precision, 100 * recall, 100 * f1
