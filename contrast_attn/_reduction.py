"""The ``reduction`` argument shared by every loss."""

from __future__ import annotations

import torch


def reduce_loss(
    loss: torch.Tensor, reduction: str, denominator: torch.Tensor | float | None = None
) -> torch.Tensor:
    """Reduce per-element losses.

    Args:
        loss: Per-element losses, any shape.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (already validated).
        denominator: For ``"mean"``, what to divide the sum by; ``None`` means
            the number of elements. A zero denominator is replaced by 1 so that an
            empty selection gives 0, not NaN.
    """
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if denominator is None:
        return total / max(loss.numel(), 1)
    if isinstance(denominator, torch.Tensor):
        denominator = denominator.to(total.dtype)
        return total / torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return total / (float(denominator) if denominator > 0 else 1.0)
