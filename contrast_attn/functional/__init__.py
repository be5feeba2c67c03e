"""Pure functions, one per loss or op, in the style of ``torch.nn.functional``.

Each function validates its inputs, computes the formula written in its
docstring, and applies the reduction. The :mod:`contrast_attn` modules are thin
wrappers that hold the hyper-parameters (and buffers such as class counts).
One concept per file: ``contrastive`` (NT-Xent, SupCon), ``class_balanced``,
``guidance`` (mask guidance, CAM), ``pooling``, ``regularizer``.
"""

from .class_balanced import class_balanced_loss, class_balanced_weights, effective_number
from .contrastive import nt_xent_loss, supcon_loss

__all__ = [
    "class_balanced_loss",
    "class_balanced_weights",
    "effective_number",
    "nt_xent_loss",
    "supcon_loss",
]
