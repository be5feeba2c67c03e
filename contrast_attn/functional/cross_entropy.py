r"""Weighted softmax cross-entropy of adjusted logits: the core of the margin losses.

Logit adjustment, balanced softmax and LDAM all change the logits and then take
the softmax cross-entropy, with optional per-class weights (deferred re-weighting)
and an ``ignore_index``, exactly as ``F.cross_entropy(weight=w, ignore_index=k)``:

.. math::
    \ell_i = -w_{y_i} \log \frac{e^{z_{i y_i}}}{\sum_c e^{z_{ic}}}, \qquad
    \text{mean} = \frac{\sum_i \ell_i}{\sum_{i:\, y_i \ne k} w_{y_i}} ,

except that a mean over no sample (every target ignored) is 0, not NaN. The
checks of the shared arguments live here too, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

from .. import _checks
from .._reduction import reduce_loss

__all__ = [
    "ClassWeight",
    "check_class_target",
    "check_class_weight",
    "check_logits",
    "compute_dtype",
    "weighted_cross_entropy",
]

ClassWeight = Union[torch.Tensor, np.ndarray, Sequence[float], None]


def check_logits(logits: torch.Tensor) -> torch.Tensor:
    """Check floating, finite ``[B, C]`` logits; return them."""
    _checks.check_floating_tensor(logits, "logits")
    _checks.check_ndim(logits, "logits", (2,), "[B, C]")
    _checks.check_finite(logits, "logits")
    return logits


def compute_dtype(logits: torch.Tensor) -> torch.dtype:
    """float64 for float64 logits, float32 otherwise (also fp16/bf16 and under autocast)."""
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def check_class_target(
    target: torch.Tensor, logits: torch.Tensor, ignore_index: int
) -> torch.Tensor:
    """Check class indices ``[B]`` in ``[0, C)`` or equal to ``ignore_index``; return them."""
    batch, num_classes = logits.shape
    _checks.check_labels(target, "target", batch)
    if not torch.compiler.is_compiling():
        bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
        if bool(bad.any()):
            raise ValueError(
                f"target must hold class indices in [0, {num_classes}) (C = {num_classes} from "
                f"logits) or ignore_index={ignore_index}, got out-of-range value(s) "
                f"{torch.unique(target[bad])[:5].tolist()}"
            )
    return target


def check_class_weight(weight: ClassWeight, num_classes: int) -> torch.Tensor | None:
    """Check optional per-class weights ``[C]``, finite and non-negative; return float64."""
    if weight is None:
        return None
    if not isinstance(weight, torch.Tensor):
        if isinstance(weight, str) or not isinstance(weight, (Sequence, np.ndarray)):
            raise TypeError(
                f"weight must be None or a tensor, array or sequence of per-class weights, "
                f"got {type(weight).__name__}"
            )
        weight = torch.as_tensor(weight)
    if weight.dtype == torch.bool or weight.is_complex():
        raise TypeError(f"weight must hold real per-class weights, got dtype {weight.dtype}")
    if weight.ndim != 1 or weight.shape[0] != num_classes:
        raise ValueError(
            f"weight must have shape [C] = [{num_classes}] (one weight per class, C from "
            f"logits), got shape {tuple(weight.shape)}"
        )
    weight = weight.to(torch.float64)
    if not torch.compiler.is_compiling():
        _checks.check_finite(weight, "weight")
        if bool((weight < 0).any()):
            raise ValueError(f"weight must be non-negative, got {weight[weight < 0][:5].tolist()}")
    return weight


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    reduction: str,
    ignore_index: int,
) -> torch.Tensor:
    """Softmax cross-entropy of (already adjusted, float32/64) logits, see the module.

    Args:
        logits: ``[B, C]`` adjusted logits in the compute dtype.
        target: ``[B]`` validated class indices (``ignore_index`` allowed).
        weight: ``[C]`` validated class weights, or ``None`` for all ones.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (validated).
        ignore_index: Target value to skip.

    Returns:
        The reduced loss (``[B]`` for ``"none"``, 0 for ignored samples).
    """
    target = target.to(logits.device)
    valid = target != ignore_index
    # int32/uint8 indices are valid targets; gather wants int64.
    index = torch.where(valid, target, 0).long()
    nll = -logits.log_softmax(dim=1).gather(1, index[:, None]).squeeze(1)
    if weight is None:
        alpha = valid.to(logits.dtype)
    else:
        alpha = weight.to(device=logits.device, dtype=logits.dtype)[index] * valid
    return reduce_loss(alpha * nll, reduction, alpha.sum())
