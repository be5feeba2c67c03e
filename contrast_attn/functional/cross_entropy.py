r"""Weighted softmax cross-entropy of adjusted logits: the core of the margin losses.

Logit adjustment, balanced softmax and LDAM all change the logits and then take
the softmax cross-entropy, with optional per-class weights (deferred re-weighting)
and an ``ignore_index``, exactly as ``F.cross_entropy(weight=w, ignore_index=k)``:

.. math::
    \ell_i = -w_{y_i} \log \frac{e^{z_{i y_i}}}{\sum_c e^{z_{ic}}}, \qquad
    \text{mean} = \frac{\sum_i \ell_i}{\sum_{i:\, y_i \ne k} w_{y_i}} ,

except that a mean over no sample (every target ignored) is 0, not NaN. The
hyper-parameters they share are one record (:class:`AdjustedCrossEntropyConfig`),
and the checks of their inputs are one call (:func:`check_inputs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Union

import numpy as np
import torch

from .. import _checks
from .._reduction import reduce_loss
from .._rows import compute_dtype
from .class_balanced import Counts
from .class_prior import PriorConfig

__all__ = [
    "AdjustedCrossEntropyConfig",
    "CheckedInputs",
    "ClassWeight",
    "adjusted_cross_entropy",
    "check_class_weight",
    "check_inputs",
    "check_logits",
]

ClassWeight = Union[torch.Tensor, np.ndarray, Sequence[float], None]


@dataclass(frozen=True)
class AdjustedCrossEntropyConfig(PriorConfig):
    """The validated hyper-parameters every adjusted cross-entropy shares.

    Raises:
        TypeError: ``ignore_index`` not an int.
        ValueError: An unknown ``reduction`` or ``zero_count``.
    """

    reduction: str = "mean"
    ignore_index: int = -100

    def __post_init__(self) -> None:
        super().__post_init__()
        _checks.check_reduction(self.reduction)
        _checks.check_int(self.ignore_index, "ignore_index")

    def adjust(self, x: torch.Tensor, index: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The loss's change of the logits ``x [B, C]`` (here none: the plain cross-entropy).

        ``index`` ``[B]`` is the target with ignored entries set to 0, ``counts``
        ``[C]`` the validated float64 counts on the device of ``x``.
        """
        return x


class CheckedInputs(NamedTuple):
    """What :func:`check_inputs` returns.

    Attributes:
        counts: ``[C]`` float64 validated counts (zeros kept, see ``zero_count``).
        weight: ``[C]`` float64 validated class weights, or ``None``.
    """

    counts: torch.Tensor
    weight: torch.Tensor | None


def check_logits(logits: torch.Tensor) -> None:
    """Check floating ``[B, C]`` logits (type and shape; their values join the call's checks)."""
    _checks.check_floating_tensor(logits, "logits")
    _checks.check_ndim(logits, "logits", (2,), "[B, C]")


def check_class_weight(
    weight: ClassWeight, num_classes: int, checks: _checks.ValueChecks
) -> torch.Tensor | None:
    """Check optional per-class weights ``[C]``, finite and non-negative; return float64.

    The value check (one pass) joins ``checks``, run by the caller.
    """
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
    checked = weight.to(torch.float64)
    if checks.enabled:
        finite = torch.isfinite(checked)
        checks.flag(
            (~finite | (checked < 0)).any(),
            lambda: (
                f"weight must be finite, got {checked[~finite][:5].tolist()}"
                if not bool(finite.all())
                else f"weight must be non-negative, got {checked[checked < 0][:5].tolist()}"
            ),
        )
    return checked


def check_inputs(
    config: AdjustedCrossEntropyConfig,
    logits: torch.Tensor,
    target: torch.Tensor,
    counts: Counts,
    weight: ClassWeight,
) -> CheckedInputs:
    """The checks of one adjusted cross-entropy call: free ones first, values in one sync.

    Raises:
        TypeError: Non-tensor or non-floating logits, non-integer targets, counts or
            weight of a wrong kind.
        ValueError: logits not ``[B, C]`` or not finite; target out of range; bad
            counts; weight of a wrong shape, not finite or negative.
    """
    check_logits(logits)
    num_classes = logits.shape[1]
    checks = _checks.ValueChecks()
    _checks.check_class_target(target, logits, config.ignore_index, checks)
    checked_weight = check_class_weight(weight, num_classes, checks)
    checked = config.check_counts(counts, num_classes, source="logits [B, C]", checks=checks)
    checks.values(logits, "logits")
    checks.run()
    return CheckedInputs(checked, checked_weight)


def adjusted_cross_entropy(
    config: AdjustedCrossEntropyConfig,
    logits: torch.Tensor,
    target: torch.Tensor,
    counts: Counts,
    weight: ClassWeight = None,
) -> torch.Tensor:
    """Softmax cross-entropy of ``config.adjust`` of the logits, see the module.

    What every adjusted loss's function and module call with their record. The
    logits are upcast to float32 (float64 stays float64) outside autocast before
    ``config.adjust``.

    Args:
        config: The validated hyper-parameters, with the loss's ``adjust``.
        logits: ``[B, C]`` unnormalised scores.
        target: ``[B]`` class indices (``ignore_index`` allowed).
        counts: ``[C]`` training samples per class.
        weight: Optional ``[C]`` class weights (all ones when ``None``).

    Returns:
        The reduced loss (``[B]`` for ``"none"``, 0 for ignored samples).

    Raises:
        As :func:`check_inputs`.
    """
    checked = check_inputs(config, logits, target, counts, weight)
    dtype = compute_dtype(logits)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        x = logits.to(dtype)
        target = target.to(x.device)
        valid = target != config.ignore_index
        # int32/uint8 indices are valid targets; gather wants int64.
        index = torch.where(valid, target, 0).long()
        z = config.adjust(x, index, checked.counts.to(x.device))
        nll = -z.log_softmax(dim=1).gather(1, index[:, None]).squeeze(1)
        if checked.weight is None:
            alpha = valid.to(dtype)
        else:
            alpha = checked.weight.to(device=x.device, dtype=dtype)[index] * valid
        return reduce_loss(alpha * nll, config.reduction, alpha.sum())
