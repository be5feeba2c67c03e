"""``nn.Module`` losses: hyper-parameters and buffers around :mod:`contrast_attn.functional`."""

from .class_balanced import ClassBalancedLoss
from .contrastive import NTXentLoss, SupConLoss

__all__ = [
    "ClassBalancedLoss",
    "NTXentLoss",
    "SupConLoss",
]
