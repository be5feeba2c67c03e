r"""The class prior of the training set and its logarithm, from per-class counts.

The prior :math:`\pi_c = n_c / \sum_k n_k` is what logit adjustment, balanced
softmax and LDAM's margins are built from. A class without any sample has
:math:`\log \pi_c = -\infty` (and an infinite LDAM margin); ``zero_count`` says what
to do, the same policy for every loss of this family:

- ``"error"`` (default): raise a :class:`ValueError` naming the class;
- ``"as_one"``: count the class as if it had one sample (the rarest possible).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import _checks
from .class_balanced import Counts, CountsPolicy

__all__ = [
    "PRIOR_ZERO_COUNTS",
    "PriorConfig",
    "check_zero_count",
    "class_log_prior",
    "counts_without_zeros",
    "log_prior",
    "without_zeros",
    "zero_count_message",
]

PRIOR_ZERO_COUNTS = ("error", "as_one")


def check_zero_count(zero_count: str) -> str:
    """Check ``zero_count`` is ``"error"`` or ``"as_one"``; return it."""
    return _checks.check_choice(zero_count, "zero_count", PRIOR_ZERO_COUNTS)


def zero_count_message(quantity: str) -> str:
    """Why a class without samples fails under ``zero_count="error"``, for the message."""
    return (
        f"their {quantity} is infinite. Pass zero_count='as_one' to count such a class as "
        f"if it had one sample"
    )


@dataclass(frozen=True)
class PriorConfig(CountsPolicy):
    """The validated ``zero_count`` policy shared by the losses built on the class prior.

    Subclasses add their own hyper-parameters (and ``empty_class``, the message
    for a class without samples).

    Raises:
        ValueError: ``zero_count`` other than ``"error"`` or ``"as_one"``.
    """

    zero_count: str = "error"

    empty_class: ClassVar[str] = zero_count_message("log prior")

    def __post_init__(self) -> None:
        check_zero_count(self.zero_count)


def without_zeros(counts: torch.Tensor) -> torch.Tensor:
    """Validated counts with every zero counted as one sample (``zero_count="as_one"``)."""
    return torch.where(counts == 0, torch.ones_like(counts), counts)


def counts_without_zeros(
    counts: Counts, num_classes: int | None = None, *, zero_count: str = "error"
) -> torch.Tensor:
    """Validated float64 ``[C]`` counts with the ``zero_count`` policy applied.

    Args:
        counts: ``[C]`` non-negative whole numbers of samples per class.
        num_classes: ``C`` when known (the counts must agree).
        zero_count: ``"error"`` or ``"as_one"``.

    Returns:
        ``[C]`` float64 counts, every entry ``>= 1``.

    Raises:
        TypeError: ``counts`` not a tensor, array or sequence of numbers.
        ValueError: Bad counts; a zero count with ``zero_count="error"``.
    """
    return without_zeros(PriorConfig(zero_count).check_counts(counts, num_classes))


def log_prior(positive: torch.Tensor) -> torch.Tensor:
    """:math:`\\log n_c - \\log \\sum_k n_k` of counts that are all positive (float64 ``[C]``)."""
    return positive.log() - positive.sum().log()


def class_log_prior(counts: Counts, *, zero_count: str = "error") -> torch.Tensor:
    r"""Logarithm of the class prior estimated from training counts.

    .. math::
        \log \pi_c = \log n_c - \log \sum_{k=1}^{C} n_k ,

    computed in float64 from the counts (no :math:`\log(x + \epsilon)`: a class
    without samples follows ``zero_count``, see the module docstring).

    Args:
        counts: ``[C]`` non-negative whole numbers of samples per class (tensor of
            any real dtype, NumPy array or sequence).
        zero_count: ``"error"`` (default) or ``"as_one"``.

    Returns:
        ``[C]`` float64 tensor on the device of ``counts``; ``exp`` of it sums to 1.

    Raises:
        TypeError: ``counts`` not a tensor, array or sequence of numbers.
        ValueError: ``counts`` not 1-D, empty, negative or not whole; a zero count
            with ``zero_count="error"``; an unknown ``zero_count``.

    References:
        Menon et al., "Long-tail learning via logit adjustment", ICLR 2021
        (arXiv:2007.07314), Section 4.

    Examples:
        >>> from contrast_attn.functional import class_log_prior
        >>> class_log_prior([3, 1]).exp()
        tensor([0.7500, 0.2500], dtype=torch.float64)
        >>> class_log_prior([3, 0], zero_count="as_one").exp()
        tensor([0.7500, 0.2500], dtype=torch.float64)
    """
    return log_prior(counts_without_zeros(counts, zero_count=zero_count))
