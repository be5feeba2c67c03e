"""Pure functions, one per loss or op, in the style of ``torch.nn.functional``.

Each function validates its inputs, computes the formula written in its
docstring, and applies the reduction. The :mod:`contrast_attn` modules are thin
wrappers that hold the hyper-parameters (and buffers such as class counts).
One concept per file: ``contrastive`` (NT-Xent, SupCon), ``class_balanced``,
``guidance`` (the mask-guidance loss), ``resize`` (area resizing of masks),
``cam`` (class activation maps), ``pooling``, ``regularizer``. Each loss's
hyper-parameters are one validated record (``SupConConfig``, ...) in its file.
"""

from .cam import class_activation_map
from .class_balanced import class_balanced_loss, class_balanced_weights, effective_number
from .contrastive import nt_xent_loss, supcon_loss
from .guidance import mask_guidance_loss
from .pooling import MaskedPool, masked_average_pool
from .regularizer import contrastive_feature_regularizer
from .resize import resize_mask

__all__ = [
    "MaskedPool",
    "class_activation_map",
    "class_balanced_loss",
    "class_balanced_weights",
    "contrastive_feature_regularizer",
    "effective_number",
    "mask_guidance_loss",
    "masked_average_pool",
    "nt_xent_loss",
    "resize_mask",
    "supcon_loss",
]
