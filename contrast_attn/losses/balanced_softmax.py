r"""Balanced softmax as a module whose class counts are a buffer."""

from __future__ import annotations

import torch

from ..functional.balanced_softmax import BalancedSoftmaxConfig
from ..functional.class_balanced import Counts
from ..functional.cross_entropy import ClassWeight, adjusted_cross_entropy
from .counts import ClassCountsModule

__all__ = ["BalancedSoftmaxLoss"]


class BalancedSoftmaxLoss(ClassCountsModule):
    r"""Balanced softmax loss; see :func:`contrast_attn.functional.balanced_softmax_loss`.

    .. math::
        \ell_i = -w_{y_i} \log \frac{n_{y_i} e^{x_{i y_i}}}{\sum_c n_c e^{x_{ic}}} .

    The counts :math:`n_c` live in the ``counts`` buffer (long ``[C]``): saved in
    ``state_dict``, moved by ``.to()``, built by :meth:`from_labels` or
    :meth:`from_dataset` and accumulated with :meth:`update` (summed over ranks).

    Args:
        counts: ``[C]`` training samples per class, or ``None`` to start from zeros
            (then ``num_classes`` is required).
        num_classes: ``C``; optional when ``counts`` is given (must then agree).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        ignore_index: Target value to skip (also skipped by :meth:`update`).
        zero_count: ``"error"`` or ``"as_one"``; with ``"error"`` given counts are
            checked at construction.

    Shape:
        ``loss(logits, target, weight=None)`` with logits ``[B, C]``, target ``[B]``
        and optional class weights ``[C]``; returns a scalar (``[B]`` for
        ``reduction="none"``).

    Raises:
        TypeError: Wrong argument types.
        ValueError: Neither ``counts`` nor ``num_classes``; bad counts; a class
            without samples and ``zero_count="error"``; in the call, the errors of
            :func:`~contrast_attn.functional.balanced_softmax_loss`.

    References:
        Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition",
        NeurIPS 2020 (arXiv:2007.10740).

    Examples:
        >>> import torch
        >>> from contrast_attn import BalancedSoftmaxLoss
        >>> criterion = BalancedSoftmaxLoss([90, 9, 1])
        >>> loss = criterion(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
        >>> sorted(criterion.state_dict())
        ['counts']
    """

    def __init__(
        self,
        counts: Counts | None = None,
        *,
        num_classes: int | None = None,
        reduction: str = "mean",
        ignore_index: int = -100,
        zero_count: str = "error",
    ) -> None:
        config = BalancedSoftmaxConfig(zero_count, reduction, ignore_index)
        super().__init__(counts, num_classes=num_classes, config=config)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: ClassWeight = None
    ) -> torch.Tensor:
        return adjusted_cross_entropy(self.config, logits, target, self.counts, weight)
