r"""The LDAM loss as a module whose class counts are a buffer."""

from __future__ import annotations

import torch

from ..functional.class_balanced import Counts
from ..functional.cross_entropy import ClassWeight, adjusted_cross_entropy
from ..functional.ldam import LDAMConfig, class_margins
from .counts import ClassCountsModule

__all__ = ["LDAMLoss"]


class LDAMLoss(ClassCountsModule):
    r"""LDAM loss; see :func:`contrast_attn.functional.ldam_loss`.

    .. math::
        \ell_i = -w_{y_i} \log
            \frac{e^{s (x_{i y_i} - \Delta_{y_i})}}
                 {e^{s (x_{i y_i} - \Delta_{y_i})} + \sum_{c \ne y_i} e^{s x_{ic}}},
        \qquad \Delta_c \propto n_c^{-1/4}, \quad \max_c \Delta_c = \text{max\_margin} .

    The counts :math:`n_c` live in the ``counts`` buffer (long ``[C]``): saved in
    ``state_dict``, moved by ``.to()``, built by :meth:`from_labels` or
    :meth:`from_dataset` and accumulated with :meth:`update` (summed over ranks).
    For LDAM-DRW pass the epoch's
    :func:`~contrast_attn.functional.deferred_reweighting_weights` as ``weight``.

    Args:
        counts: ``[C]`` training samples per class, or ``None`` to start from zeros
            (then ``num_classes`` is required).
        num_classes: ``C``; optional when ``counts`` is given (must then agree).
        max_margin: Margin of the rarest class, :math:`\ge 0` (paper: 0.5).
        scale: :math:`s > 0` (paper: 30, for cosine logits).
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
            without samples and ``zero_count="error"``; ``max_margin < 0`` or
            ``scale <= 0``; in the call, the errors of
            :func:`~contrast_attn.functional.ldam_loss`.

    References:
        Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware
        Margin Loss", NeurIPS 2019 (arXiv:1906.07413).

    Examples:
        >>> import torch
        >>> from contrast_attn import LDAMLoss
        >>> from contrast_attn.functional import deferred_reweighting_weights
        >>> criterion = LDAMLoss([160, 10, 1], max_margin=0.5, scale=30.0)
        >>> criterion.margins()
        tensor([0.1406, 0.2812, 0.5000], dtype=torch.float64)
        >>> cosine, target = torch.rand(4, 3) * 2 - 1, torch.tensor([0, 1, 2, 0])
        >>> for epoch in (0, 160):  # LDAM-DRW: re-weighted from epoch 160 on
        ...     w = deferred_reweighting_weights(criterion.counts, epoch, defer_epoch=160)
        ...     loss = criterion(cosine, target, weight=w)
    """

    def __init__(
        self,
        counts: Counts | None = None,
        *,
        num_classes: int | None = None,
        max_margin: float = 0.5,
        scale: float = 30.0,
        reduction: str = "mean",
        ignore_index: int = -100,
        zero_count: str = "error",
    ) -> None:
        config = LDAMConfig(zero_count, reduction, ignore_index, max_margin, scale)
        super().__init__(counts, num_classes=num_classes, config=config)

    def margins(self) -> torch.Tensor:
        """The current margins :math:`\\Delta_c` ``[C]`` (float64), from the ``counts`` buffer."""
        return class_margins(self.config, self.config.check_counts(self.counts))

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: ClassWeight = None
    ) -> torch.Tensor:
        return adjusted_cross_entropy(self.config, logits, target, self.counts, weight)
