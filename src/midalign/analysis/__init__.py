"""Layer-wise cross-lingual alignment: pooled vectors of every layer, retrieval metrics, reports."""

from midalign.analysis.extract import pooled_states
from midalign.analysis.metrics import layer_metrics, margin_matrix, pair_metrics, tie_aware_accuracy
from midalign.analysis.run import (
    AnalysisResult,
    analyze,
    analyze_states,
    best_inner_layer,
    recommend_layer_for_pairs,
)

__all__ = [
    "AnalysisResult",
    "analyze",
    "analyze_states",
    "best_inner_layer",
    "layer_metrics",
    "margin_matrix",
    "pair_metrics",
    "pooled_states",
    "recommend_layer_for_pairs",
    "tie_aware_accuracy",
]
