"""contrast_attn: composable PyTorch losses and layers for lesion-aware,
class-imbalanced medical image recognition.

Every loss exists as a function in :mod:`contrast_attn.functional` and as an
``nn.Module`` here; layers live in :mod:`contrast_attn.layers` and are
re-exported here too.
"""

from . import distributed, functional
from ._checks import finite_checks_enabled, set_finite_checks
from ._version import __version__
from .layers import MaskedAveragePool, MaskGuidedAttention, ProjectionHead
from .losses import (
    BalancedSoftmaxLoss,
    ClassBalancedLoss,
    ContrastiveFeatureRegularizer,
    LDAMLoss,
    LogitAdjustedLoss,
    MaskGuidanceLoss,
    NTXentLoss,
    PostHocLogitAdjustment,
    SupConLoss,
)
from .memory import MemoryQueue

__all__ = [
    "BalancedSoftmaxLoss",
    "ClassBalancedLoss",
    "ContrastiveFeatureRegularizer",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "MaskGuidanceLoss",
    "MaskGuidedAttention",
    "MaskedAveragePool",
    "MemoryQueue",
    "NTXentLoss",
    "PostHocLogitAdjustment",
    "ProjectionHead",
    "SupConLoss",
    "__version__",
    "distributed",
    "finite_checks_enabled",
    "functional",
    "set_finite_checks",
]
