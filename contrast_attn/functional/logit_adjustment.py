r"""Logit adjustment of Menon et al. (ICLR 2021): in the loss, or after training.

A classifier trained with plain cross-entropy on a long-tailed set learns
:math:`p(y \mid x) \propto p(x \mid y)\, \pi_y`, which favours frequent classes. The
balanced error is minimised by :math:`\arg\max_y f_y(x) - \tau \log \pi_y` (the
*post-hoc* correction, usable on any trained model), or by training with the
*logit-adjusted loss*, which adds :math:`\tau \log \pi_y` to the logits inside the
softmax, so that the plain :math:`\arg\max_y f_y(x)` is the balanced decision rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _checks
from .._rows import compute_dtype
from .class_balanced import Counts
from .class_prior import PriorConfig, log_prior, without_zeros
from .cross_entropy import (
    AdjustedCrossEntropyConfig,
    ClassWeight,
    adjusted_cross_entropy,
    check_logits,
)

__all__ = [
    "LogitAdjustedConfig",
    "PostHocAdjustmentConfig",
    "logit_adjusted_loss",
    "post_hoc_adjustment",
    "post_hoc_logit_adjustment",
]


def _check_tau(tau: float) -> float:
    return _checks.check_float(tau, "tau", low=0.0)


@dataclass(frozen=True)
class LogitAdjustedConfig(AdjustedCrossEntropyConfig):
    """The validated hyper-parameters of :func:`logit_adjusted_loss` (see there for each).

    Raises:
        TypeError: A hyper-parameter of the wrong type.
        ValueError: ``tau < 0``, an unknown ``reduction`` or ``zero_count``.
    """

    tau: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "tau", _check_tau(self.tau))

    def adjust(self, x: torch.Tensor, index: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """:math:`x_{ic} + \\tau \\log \\pi_c`."""
        return x + (self.tau * log_prior(without_zeros(counts))).to(x.dtype)


@dataclass(frozen=True)
class PostHocAdjustmentConfig(PriorConfig):
    """The validated hyper-parameters of :func:`post_hoc_logit_adjustment`.

    Raises:
        TypeError: ``tau`` not a real number.
        ValueError: ``tau < 0`` or an unknown ``zero_count``.
    """

    tau: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "tau", _check_tau(self.tau))


def logit_adjusted_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    counts: Counts,
    *,
    tau: float = 1.0,
    weight: ClassWeight = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    zero_count: str = "error",
) -> torch.Tensor:
    r"""Logit-adjusted softmax cross-entropy (Menon et al., 2021, Eq. 10).

    .. math::
        \ell_i = -w_{y_i} \log
            \frac{e^{x_{i y_i} + \tau \log \pi_{y_i}}}
                 {\sum_{c=1}^{C} e^{x_{ic} + \tau \log \pi_c}},
        \qquad \pi_c = \frac{n_c}{\sum_k n_k} ,

    with :math:`w \equiv 1` unless ``weight`` is given. :math:`\tau = 0` or uniform
    counts give the plain cross-entropy; :math:`\tau = 1` is the balanced softmax
    of Ren et al. (:func:`balanced_softmax_loss`). Predict with the plain
    :math:`\arg\max_c x_{ic}`: the adjustment is only applied in training.

    The reductions and ``ignore_index`` follow ``F.cross_entropy(weight=w)``: the
    mean divides by :math:`\sum_i w_{y_i}` over non-ignored samples (0 when there
    is none). Logits are upcast to float32 (float64 stays float64), also under
    fp16/bf16 autocast; :math:`\log \pi` is computed in float64 from the counts.

    Args:
        logits: ``[B, C]`` unnormalised scores.
        target: ``[B]`` integer class indices (``ignore_index`` allowed).
        counts: ``[C]`` training samples per class (tensor, NumPy array or sequence).
        tau: Adjustment strength :math:`\tau \ge 0`; the paper's default is 1.
        weight: Optional ``[C]`` non-negative class weights :math:`w` (e.g. from
            :func:`deferred_reweighting_weights`).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[B]``, 0 for ignored samples).
        ignore_index: Target value to skip.
        zero_count: ``"error"`` or ``"as_one"`` for a class without samples (see
            :func:`class_log_prior`).

    Returns:
        A scalar, or ``[B]`` with ``reduction="none"`` (float32, or float64 for
        float64 logits).

    Raises:
        TypeError: Non-tensor or non-floating logits, non-integer targets, counts or
            weight of a wrong kind.
        ValueError: logits not ``[B, C]`` or not finite; target out of range; bad
            counts (negative, not whole, wrong length, a zero with
            ``zero_count="error"``); weight of a wrong shape or negative; ``tau < 0``.

    References:
        Menon et al., "Long-tail learning via logit adjustment", ICLR 2021
        (arXiv:2007.07314), Eq. 10; code https://github.com/google-research/google-research
        (``logit_adjustment``).

    Examples:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from contrast_attn.functional import logit_adjusted_loss
        >>> _ = torch.manual_seed(0)
        >>> logits, target = torch.randn(4, 3), torch.tensor([0, 0, 1, 2])
        >>> loss = logit_adjusted_loss(logits, target, [900, 90, 10], tau=1.0)
        >>> # uniform counts (or tau = 0): the plain cross-entropy
        >>> plain = logit_adjusted_loss(logits, target, [5, 5, 5])
        >>> torch.allclose(plain, F.cross_entropy(logits, target))
        True
    """
    config = LogitAdjustedConfig(zero_count, reduction, ignore_index, tau)
    return adjusted_cross_entropy(config, logits, target, counts, weight)


def post_hoc_logit_adjustment(
    logits: torch.Tensor, counts: Counts, *, tau: float = 1.0, zero_count: str = "error"
) -> torch.Tensor:
    r"""Correct a trained model's logits for the training prior (Menon et al., Eq. 9).

    .. math::
        \tilde x_{ic} = x_{ic} - \tau \log \pi_c, \qquad
        \hat y_i = \arg\max_c \tilde x_{ic} ,

    the decision rule that targets the *balanced* error (the mean of the per-class
    errors) instead of the error under the training prior. It needs no retraining:
    apply it to the outputs of any model trained with plain cross-entropy (not to
    one trained with :func:`logit_adjusted_loss` or :func:`balanced_softmax_loss`,
    which already include the correction). :math:`\tau` can be tuned on validation
    data; :math:`\tau = 1` is the Bayes-optimal correction for a calibrated model.
    ``softmax`` of the result gives the class probabilities under a uniform prior.

    Args:
        logits: ``[B, C]`` scores of a trained model.
        counts: ``[C]`` training samples per class.
        tau: Correction strength :math:`\tau \ge 0`; 0 returns the logits unchanged.
        zero_count: ``"error"`` or ``"as_one"`` for a class without samples.

    Returns:
        ``[B, C]`` corrected logits (float32, or float64 for float64 logits),
        differentiable with respect to ``logits``.

    Raises:
        TypeError: Non-tensor or non-floating logits; counts of a wrong kind.
        ValueError: logits not ``[B, C]`` or not finite; bad counts; ``tau < 0``.

    References:
        Menon et al., "Long-tail learning via logit adjustment", ICLR 2021
        (arXiv:2007.07314), Eq. 9.

    Examples:
        >>> import torch
        >>> from contrast_attn.functional import post_hoc_logit_adjustment
        >>> logits = torch.tensor([[2.0, 1.0]])  # the frequent class 0 wins
        >>> post_hoc_logit_adjustment(logits, [90, 10]).argmax(dim=1)  # 2 - log .9 < 1 - log .1
        tensor([1])
    """
    return post_hoc_adjustment(
        PostHocAdjustmentConfig(zero_count=zero_count, tau=tau), logits, counts
    )


def post_hoc_adjustment(
    config: PostHocAdjustmentConfig, logits: torch.Tensor, counts: Counts
) -> torch.Tensor:
    """:func:`post_hoc_logit_adjustment` with validated hyper-parameters (the module's core)."""
    check_logits(logits)
    checks = _checks.ValueChecks()
    checked = config.check_counts(counts, logits.shape[1], source="logits [B, C]", checks=checks)
    checks.values(logits, "logits")
    checks.run()
    shift = config.tau * log_prior(without_zeros(checked)).to(logits.device)
    dtype = compute_dtype(logits)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return logits.to(dtype) - shift.to(dtype)
