"""``nn.Module`` losses: hyper-parameters and buffers around :mod:`contrast_attn.functional`."""

from .class_balanced import ClassBalancedLoss
from .contrastive import NTXentLoss, SupConLoss
from .guidance import MaskGuidanceLoss
from .regularizer import ContrastiveFeatureRegularizer

__all__ = [
    "ClassBalancedLoss",
    "ContrastiveFeatureRegularizer",
    "MaskGuidanceLoss",
    "NTXentLoss",
    "SupConLoss",
]
