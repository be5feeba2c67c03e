"""Pure functions, one per loss or op, in the style of ``torch.nn.functional``.

Each function validates its inputs, computes the formula written in its
docstring, and applies the reduction. The :mod:`contrast_attn` modules are thin
wrappers that hold the hyper-parameters (and buffers such as class counts).
One concept per file: ``contrastive`` (NT-Xent, SupCon), ``class_balanced``,
``logit_adjustment``, ``balanced_softmax``, ``ldam``, ``deferred_reweighting``
(with ``class_prior`` and ``cross_entropy`` beneath them), ``guidance`` (the
mask-guidance loss), ``resize`` (area resizing of masks), ``cam`` (class activation
maps), ``pooling``, ``regularizer``. Each loss's hyper-parameters are one validated
record (``SupConConfig``, ...) in its file.
"""

from .balanced_softmax import balanced_softmax_loss
from .cam import class_activation_map
from .class_balanced import class_balanced_loss, class_balanced_weights, effective_number
from .class_prior import class_log_prior
from .contrastive import nt_xent_loss, supcon_loss
from .deferred_reweighting import deferred_reweighting_weights
from .guidance import mask_guidance_loss
from .ldam import ldam_loss, ldam_margins
from .logit_adjustment import logit_adjusted_loss, post_hoc_logit_adjustment
from .pooling import MaskedPool, masked_average_pool
from .regularizer import contrastive_feature_regularizer
from .resize import resize_mask

__all__ = [
    "MaskedPool",
    "balanced_softmax_loss",
    "class_activation_map",
    "class_balanced_loss",
    "class_balanced_weights",
    "class_log_prior",
    "contrastive_feature_regularizer",
    "deferred_reweighting_weights",
    "effective_number",
    "ldam_loss",
    "ldam_margins",
    "logit_adjusted_loss",
    "mask_guidance_loss",
    "masked_average_pool",
    "nt_xent_loss",
    "post_hoc_logit_adjustment",
    "resize_mask",
    "supcon_loss",
]
