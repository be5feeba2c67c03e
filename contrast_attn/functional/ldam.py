r"""Label-distribution-aware margin (LDAM) loss of Cao et al. (NeurIPS 2019).

Rare classes generalise worse, so they are given larger margins: the generalisation
bound of the paper is minimised by per-class margins :math:`\Delta_c \propto
n_c^{-1/4}`. The margin is subtracted from the true class's logit before a scaled
softmax cross-entropy, which makes the loss demand a larger lead for rarer classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import _checks
from .class_balanced import Counts
from .class_prior import without_zeros, zero_count_message
from .cross_entropy import (
    AdjustedCrossEntropyConfig,
    ClassWeight,
    adjusted_cross_entropy,
)

__all__ = ["LDAMConfig", "class_margins", "ldam_loss", "ldam_margins"]


@dataclass(frozen=True)
class LDAMConfig(AdjustedCrossEntropyConfig):
    """The validated hyper-parameters of :func:`ldam_loss` (see there for each).

    Raises:
        TypeError: A hyper-parameter of the wrong type.
        ValueError: ``max_margin < 0``, ``scale <= 0``, an unknown ``reduction`` or
            ``zero_count``.
    """

    max_margin: float = 0.5
    scale: float = 30.0

    empty_class: ClassVar[str] = zero_count_message("LDAM margin")

    def __post_init__(self) -> None:
        super().__post_init__()
        max_margin = _checks.check_float(self.max_margin, "max_margin", low=0.0)
        object.__setattr__(self, "max_margin", max_margin)
        scale = _checks.check_float(self.scale, "scale", low=0.0, low_inclusive=False)
        object.__setattr__(self, "scale", scale)

    def adjust(self, x: torch.Tensor, index: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """:math:`s\\,(x_{ic} - \\Delta_{y_i} [c = y_i])`."""
        # The one-hot by comparison: F.one_hot reads the index range back to the host.
        classes = torch.arange(x.shape[1], device=x.device)
        at_target = (index[:, None] == classes).to(x.dtype)
        margins = class_margins(self, counts).to(x.dtype)
        return self.scale * (x - margins[index][:, None] * at_target)


def class_margins(config: LDAMConfig, counts: torch.Tensor) -> torch.Tensor:
    """Margins ``[C]`` (float64) of counts validated by ``config.check_counts``."""
    raw = without_zeros(counts).pow(-0.25)
    return raw * (config.max_margin / raw.max())


def ldam_margins(
    counts: Counts, *, max_margin: float = 0.5, zero_count: str = "error"
) -> torch.Tensor:
    r"""Per-class LDAM margins, largest (rarest class) equal to ``max_margin``.

    .. math::
        \Delta_c = \frac{C_\Delta}{n_c^{1/4}}, \qquad
        C_\Delta = \text{max\_margin} \cdot \min_k n_k^{1/4} ,

    i.e. :math:`\Delta_c = \text{max\_margin}\,(\min_k n_k / n_c)^{1/4}`, the
    authors' code's ``m_list * (max_m / max(m_list))``.

    Args:
        counts: ``[C]`` non-negative whole numbers of samples per class.
        max_margin: The margin of the rarest class, :math:`\ge 0`; the paper's
            default is 0.5.
        zero_count: ``"error"`` or ``"as_one"`` for a class without samples (its
            margin :math:`n^{-1/4}` would be infinite).

    Returns:
        ``[C]`` float64 margins on the device of ``counts``.

    Raises:
        TypeError: ``counts`` of a wrong kind.
        ValueError: Bad counts; a zero count with ``zero_count="error"``;
            ``max_margin < 0``.

    References:
        Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware
        Margin Loss", NeurIPS 2019 (arXiv:1906.07413), Eq. 12; code
        https://github.com/kaidic/LDAM-DRW (``losses.py``).

    Examples:
        >>> from contrast_attn.functional import ldam_margins
        >>> ldam_margins([160, 10, 1], max_margin=0.5)
        tensor([0.1406, 0.2812, 0.5000], dtype=torch.float64)
    """
    config = LDAMConfig(zero_count=zero_count, max_margin=max_margin)
    return class_margins(config, config.check_counts(counts))


def ldam_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    counts: Counts,
    *,
    max_margin: float = 0.5,
    scale: float = 30.0,
    weight: ClassWeight = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    zero_count: str = "error",
) -> torch.Tensor:
    r"""LDAM loss: scaled cross-entropy with a class-dependent margin (Cao et al., 2019).

    .. math::
        \ell_i = -w_{y_i} \log
            \frac{e^{s (x_{i y_i} - \Delta_{y_i})}}
                 {e^{s (x_{i y_i} - \Delta_{y_i})} + \sum_{c \ne y_i} e^{s\, x_{ic}}},

    with the margins :math:`\Delta_c` of :func:`ldam_margins` and the scale
    :math:`s` applied to every logit, margin included, as in the authors' code
    (``F.cross_entropy(s * output, target, weight)``). The paper uses it on
    cosine logits (normalised features and classifier weights, :math:`x \in
    [-1, 1]`), for which :math:`s = 30` and a margin of 0.5 are sized; for
    unnormalised logits pick a smaller ``scale``. ``max_margin=0`` and
    ``scale=1`` give the plain cross-entropy. Deferred re-weighting (LDAM-DRW) passes
    the class weights of :func:`deferred_reweighting_weights` as ``weight``.

    Reductions and ``ignore_index`` follow ``F.cross_entropy(weight=w)`` (a mean
    over no sample is 0). Logits are upcast to float32 (float64 stays float64),
    also under fp16/bf16 autocast.

    Args:
        logits: ``[B, C]`` scores, typically cosine similarities.
        target: ``[B]`` integer class indices (``ignore_index`` allowed).
        counts: ``[C]`` training samples per class (tensor, NumPy array or sequence).
        max_margin: Margin of the rarest class, :math:`\ge 0` (paper: 0.5).
        scale: :math:`s > 0` (paper: 30).
        weight: Optional ``[C]`` non-negative class weights :math:`w`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[B]``, 0 for ignored samples).
        ignore_index: Target value to skip.
        zero_count: ``"error"`` or ``"as_one"`` for a class without samples.

    Returns:
        A scalar, or ``[B]`` with ``reduction="none"`` (float32, or float64 for
        float64 logits).

    Raises:
        TypeError: Non-tensor or non-floating logits, non-integer targets, counts or
            weight of a wrong kind.
        ValueError: logits not ``[B, C]`` or not finite; target out of range; bad
            counts (negative, not whole, wrong length, a zero with
            ``zero_count="error"``); weight of a wrong shape or negative;
            ``max_margin < 0`` or ``scale <= 0``.

    References:
        Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware
        Margin Loss", NeurIPS 2019 (arXiv:1906.07413), Eq. 13; code
        https://github.com/kaidic/LDAM-DRW (``losses.py``).

    Examples:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from contrast_attn.functional import ldam_loss
        >>> _ = torch.manual_seed(0)
        >>> cosine = torch.rand(4, 3) * 2 - 1
        >>> target = torch.tensor([0, 0, 1, 2])
        >>> loss = ldam_loss(cosine, target, [900, 90, 10], max_margin=0.5, scale=30.0)
        >>> plain = ldam_loss(cosine, target, [900, 90, 10], max_margin=0.0, scale=1.0)
        >>> torch.allclose(plain, F.cross_entropy(cosine, target))
        True
    """
    config = LDAMConfig(zero_count, reduction, ignore_index, max_margin, scale)
    return adjusted_cross_entropy(config, logits, target, counts, weight)
