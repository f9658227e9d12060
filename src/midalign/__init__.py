"""midalign: middle-layer representation alignment for cross-lingual transfer in fine-tuned LLMs."""

from midalign.errors import ConfigError, DataError, MidalignError, UnsupportedModelError
from midalign.layers import hidden_states_at
from midalign.losses import info_nce
from midalign.objective import alignment_loss
from midalign.pooling import mean_pool

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "MidalignError",
    "UnsupportedModelError",
    "__version__",
    "alignment_loss",
    "hidden_states_at",
    "info_nce",
    "mean_pool",
]
