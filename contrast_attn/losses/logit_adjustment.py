r"""Logit adjustment as modules: the adjusted loss, and the post-hoc correction."""

from __future__ import annotations

import torch

from ..functional.class_balanced import Counts
from ..functional.cross_entropy import ClassWeight, adjusted_cross_entropy
from ..functional.logit_adjustment import (
    LogitAdjustedConfig,
    PostHocAdjustmentConfig,
    post_hoc_adjustment,
)
from .counts import ClassCountsModule

__all__ = ["LogitAdjustedLoss", "PostHocLogitAdjustment"]


class LogitAdjustedLoss(ClassCountsModule):
    r"""Logit-adjusted cross-entropy; see :func:`contrast_attn.functional.logit_adjusted_loss`.

    .. math::
        \ell_i = -w_{y_i} \log \frac{e^{x_{i y_i} + \tau \log \pi_{y_i}}}
                                   {\sum_c e^{x_{ic} + \tau \log \pi_c}},
        \qquad \pi_c = \frac{n_c}{\sum_k n_k} .

    The counts :math:`n_c` live in the ``counts`` buffer (long ``[C]``): saved in
    ``state_dict``, moved by ``.to()``, built by :meth:`from_labels` or
    :meth:`from_dataset` and accumulated with :meth:`update` (summed over ranks).

    Args:
        counts: ``[C]`` training samples per class, or ``None`` to start from zeros
            (then ``num_classes`` is required).
        num_classes: ``C``; optional when ``counts`` is given (must then agree).
        tau: :math:`\tau \ge 0` (paper: 1).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        ignore_index: Target value to skip (also skipped by :meth:`update`).
        zero_count: ``"error"`` or ``"as_one"``; with ``"error"`` given counts are
            checked at construction.

    Shape:
        ``loss(logits, target, weight=None)`` with logits ``[B, C]``, target ``[B]``
        and optional class weights ``[C]`` (e.g.
        :func:`~contrast_attn.functional.deferred_reweighting_weights`); returns a
        scalar (``[B]`` for ``reduction="none"``).

    Raises:
        TypeError: Wrong argument types.
        ValueError: Neither ``counts`` nor ``num_classes``; bad counts; a class
            without samples and ``zero_count="error"``; ``tau < 0``; in the call, the
            errors of :func:`~contrast_attn.functional.logit_adjusted_loss`.

    References:
        Menon et al., "Long-tail learning via logit adjustment", ICLR 2021
        (arXiv:2007.07314).

    Examples:
        >>> import torch
        >>> from contrast_attn import LogitAdjustedLoss
        >>> labels = torch.tensor([0] * 90 + [1] * 9 + [2])
        >>> criterion = LogitAdjustedLoss.from_labels(labels, num_classes=3, tau=1.0)
        >>> criterion.counts
        tensor([90,  9,  1])
        >>> loss = criterion(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    """

    def __init__(
        self,
        counts: Counts | None = None,
        *,
        num_classes: int | None = None,
        tau: float = 1.0,
        reduction: str = "mean",
        ignore_index: int = -100,
        zero_count: str = "error",
    ) -> None:
        config = LogitAdjustedConfig(zero_count, reduction, ignore_index, tau)
        super().__init__(counts, num_classes=num_classes, config=config)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, weight: ClassWeight = None
    ) -> torch.Tensor:
        return adjusted_cross_entropy(self.config, logits, target, self.counts, weight)


class PostHocLogitAdjustment(ClassCountsModule):
    r"""Prior correction of a trained model's logits; see
    :func:`contrast_attn.functional.post_hoc_logit_adjustment`.

    .. math::
        \tilde x_{ic} = x_{ic} - \tau \log \pi_c ,

    so that ``argmax`` targets the balanced error. The training counts live in the
    ``counts`` buffer, so the correction is saved with the model: append it to any
    trained classifier, ``nn.Sequential(model, PostHocLogitAdjustment(counts))``.

    Args:
        counts: ``[C]`` training samples per class, or ``None`` to start from zeros
            (then ``num_classes`` is required and :meth:`update` fills the counts).
        num_classes: ``C``; optional when ``counts`` is given (must then agree).
        tau: :math:`\tau \ge 0` (1 is the Bayes-optimal correction of a calibrated
            model; tune it on validation data).
        zero_count: ``"error"`` or ``"as_one"``.

    Shape:
        ``adjust(logits)`` with logits ``[B, C]``; returns ``[B, C]`` (float32, or
        float64 for float64 logits).

    Raises:
        TypeError: Wrong argument types.
        ValueError: Neither ``counts`` nor ``num_classes``; bad counts; a class
            without samples and ``zero_count="error"``; ``tau < 0``.

    References:
        Menon et al., "Long-tail learning via logit adjustment", ICLR 2021
        (arXiv:2007.07314), Eq. 9.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from contrast_attn import PostHocLogitAdjustment
        >>> model = nn.Sequential(nn.Linear(8, 2), PostHocLogitAdjustment([90, 10]))
        >>> model(torch.randn(5, 8)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        counts: Counts | None = None,
        *,
        num_classes: int | None = None,
        tau: float = 1.0,
        zero_count: str = "error",
    ) -> None:
        config = PostHocAdjustmentConfig(zero_count=zero_count, tau=tau)
        super().__init__(counts, num_classes=num_classes, config=config)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return post_hoc_adjustment(self.config, logits, self.counts)
