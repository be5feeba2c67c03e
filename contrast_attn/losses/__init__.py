"""``nn.Module`` losses: hyper-parameters and buffers around :mod:`contrast_attn.functional`."""

from .balanced_softmax import BalancedSoftmaxLoss
from .class_balanced import ClassBalancedLoss
from .contrastive import NTXentLoss, SupConLoss
from .guidance import MaskGuidanceLoss
from .ldam import LDAMLoss
from .logit_adjustment import LogitAdjustedLoss, PostHocLogitAdjustment
from .regularizer import ContrastiveFeatureRegularizer

__all__ = [
    "BalancedSoftmaxLoss",
    "ClassBalancedLoss",
    "ContrastiveFeatureRegularizer",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "MaskGuidanceLoss",
    "NTXentLoss",
    "PostHocLogitAdjustment",
    "SupConLoss",
]
