"""``nn.Module`` layers with parameters: attention, pooling, heads."""

from .attention import MaskGuidedAttention
from .heads import ProjectionHead
from .pooling import MaskedAveragePool

__all__ = [
    "MaskGuidedAttention",
    "MaskedAveragePool",
    "ProjectionHead",
]
