"""``nn.Module`` losses: hyper-parameters and buffers around :mod:`contrast_attn.functional`."""

from .contrastive import NTXentLoss, SupConLoss

__all__ = [
    "NTXentLoss",
    "SupConLoss",
]
