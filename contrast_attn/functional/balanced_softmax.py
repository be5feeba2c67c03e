r"""Balanced softmax of Ren et al. (NeurIPS 2020).

When the training labels follow the counts :math:`n_c` but the test labels are
balanced, the softmax that is right for training is the test-time softmax with each
class's term multiplied by its count. Training through it leaves the model's own
logits estimating the balanced posterior, which is then used as is at test time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .class_balanced import Counts
from .class_prior import without_zeros
from .cross_entropy import (
    AdjustedCrossEntropyConfig,
    ClassWeight,
    adjusted_cross_entropy,
)

__all__ = ["BalancedSoftmaxConfig", "balanced_softmax_loss"]


@dataclass(frozen=True)
class BalancedSoftmaxConfig(AdjustedCrossEntropyConfig):
    """The validated hyper-parameters of :func:`balanced_softmax_loss` (see there for each).

    Raises:
        TypeError: ``ignore_index`` not an int.
        ValueError: An unknown ``reduction`` or ``zero_count``.
    """

    def adjust(self, x: torch.Tensor, index: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """:math:`x_{ic} + \\log n_c`."""
        return x + without_zeros(counts).log().to(x.dtype)


def balanced_softmax_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    counts: Counts,
    *,
    weight: ClassWeight = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    zero_count: str = "error",
) -> torch.Tensor:
    r"""Balanced softmax cross-entropy (Ren et al., 2020, Eq. 4).

    .. math::
        \ell_i = -w_{y_i} \log \hat\phi_{y_i}(x_i), \qquad
        \hat\phi_j(x_i) = \frac{n_j \, e^{x_{ij}}}{\sum_{c=1}^{C} n_c \, e^{x_{ic}}} ,

    computed as the cross-entropy of :math:`x_{ic} + \log n_c` (the authors' code),
    with :math:`w \equiv 1` unless ``weight`` is given. Since
    :math:`\log n_c = \log \pi_c + \log \sum_k n_k` and a softmax ignores a constant
    shift, this is the logit-adjusted loss with :math:`\tau = 1`
    (:func:`logit_adjusted_loss`). Predict with the plain
    :math:`\arg\max_c x_{ic}` (the paper's test-time softmax).

    Reductions and ``ignore_index`` follow ``F.cross_entropy(weight=w)`` (a mean
    over no sample is 0). Logits are upcast to float32 (float64 stays float64),
    also under fp16/bf16 autocast.

    Args:
        logits: ``[B, C]`` unnormalised scores.
        target: ``[B]`` integer class indices (``ignore_index`` allowed).
        counts: ``[C]`` training samples per class (tensor, NumPy array or sequence).
        weight: Optional ``[C]`` non-negative class weights :math:`w`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[B]``, 0 for ignored samples).
        ignore_index: Target value to skip.
        zero_count: ``"error"`` or ``"as_one"`` for a class without samples (a zero
            count would remove the class from the softmax).

    Returns:
        A scalar, or ``[B]`` with ``reduction="none"`` (float32, or float64 for
        float64 logits).

    Raises:
        TypeError: Non-tensor or non-floating logits, non-integer targets, counts or
            weight of a wrong kind.
        ValueError: logits not ``[B, C]`` or not finite; target out of range; bad
            counts (negative, not whole, wrong length, a zero with
            ``zero_count="error"``); weight of a wrong shape or negative.

    References:
        Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition",
        NeurIPS 2020 (arXiv:2007.10740), Eq. 4; code
        https://github.com/jiawei-ren/BalancedMetaSoftmax.

    Examples:
        >>> import torch
        >>> from contrast_attn.functional import balanced_softmax_loss, logit_adjusted_loss
        >>> _ = torch.manual_seed(0)
        >>> logits, target = torch.randn(4, 3), torch.tensor([0, 0, 1, 2])
        >>> loss = balanced_softmax_loss(logits, target, [900, 90, 10])
        >>> torch.allclose(loss, logit_adjusted_loss(logits, target, [900, 90, 10], tau=1.0))
        True
    """
    config = BalancedSoftmaxConfig(zero_count, reduction, ignore_index)
    return adjusted_cross_entropy(config, logits, target, counts, weight)
