r"""Class-balanced losses of Cui et al. (CVPR 2019): softmax, sigmoid and focal.

A class seen :math:`n_c` times is worth its *effective number* of samples
:math:`E_c = (1 - \beta^{n_c}) / (1 - \beta)`, and each sample of class :math:`c`
is weighted by :math:`1 / E_c`, rescaled so that the :math:`C` weights sum to
:math:`C`. Everything follows the authors' reference code
(richardaecn/class-balanced-loss, ``src/cifar_main.py``): the weights, the
per-sample weighting of the three losses, the numerically stable focal modulator
and the normalisation of the mean.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import numpy as np
import torch
import torch.nn.functional as F

from .. import _checks
from .._reduction import reduce_loss

__all__ = [
    "ClassBalancedConfig",
    "CountsPolicy",
    "check_counts",
    "class_balanced",
    "class_balanced_loss",
    "class_balanced_weights",
    "effective_number",
]

LOSS_TYPES = ("softmax", "sigmoid", "focal")
NORMALIZATIONS = ("reference", "weight_sum")
ZERO_COUNTS = ("error", "as_one", "zero_weight")
LABEL_WEIGHTINGS = ("reference", "per_label")

EMPTY_CLASS = (
    "their class-balanced weight (1 - beta) / (1 - beta**0) is infinite. Pass "
    "zero_count='as_one' to weight such a class as if it had one sample, or "
    "zero_count='zero_weight' to give it weight 0"
)

Counts = Union[torch.Tensor, np.ndarray, Sequence[int], Sequence[float]]


def _preview(values: torch.Tensor, limit: int = 5) -> str:
    """The first few entries of a 1-D tensor, for error messages."""
    items = values.flatten()[:limit].tolist()
    more = ", ..." if values.numel() > limit else ""
    return f"[{', '.join(str(v) for v in items)}{more}]"


def check_counts(
    counts: Counts,
    num_classes: int | None = None,
    *,
    source: str = "num_classes",
    zero_count: str | None = None,
    empty_class: str = EMPTY_CLASS,
    checks: _checks.ValueChecks | None = None,
) -> torch.Tensor:
    """Validate per-class sample counts; return them as a float64 ``[C]`` tensor.

    ``source`` names where ``num_classes`` comes from, for the message. With
    ``zero_count`` the treatment of empty classes is checked too (``"error"``: no
    class may be empty, ``empty_class`` saying why; ``"zero_weight"``: not every
    class). The value checks join ``checks`` when given (run by the caller), else
    run at once.
    """
    if not isinstance(counts, torch.Tensor):
        if isinstance(counts, str) or not isinstance(counts, (Sequence, np.ndarray)):
            raise TypeError(
                f"counts must be a tensor, an array or a sequence of per-class sample counts, "
                f"got {type(counts).__name__}"
            )
        counts = _counts_tensor(counts)
    _checks.check_tensor(counts, "counts")
    if counts.dtype == torch.bool or counts.is_complex():
        raise TypeError(f"counts must hold integer sample counts, got dtype {counts.dtype}")
    if counts.ndim != 1 or counts.numel() == 0:
        raise ValueError(
            f"counts must have shape [C] (one sample count per class, C >= 1), got shape "
            f"{tuple(counts.shape)}"
        )
    if num_classes is not None and counts.shape[0] != num_classes:
        raise ValueError(
            f"counts must have one entry per class, C = {num_classes}, got {counts.shape[0]} "
            f"entries (C is given by {source})"
        )
    counts = counts.to(torch.float64)
    value_checks = _checks.ValueChecks() if checks is None else checks
    if value_checks.enabled:
        # One pass: NaN/Inf, negative, fractional (and, per zero_count, empty classes).
        bad = ~torch.isfinite(counts) | (counts < 0) | (counts != counts.round())
        failed = bad.any()
        zero = counts == 0
        if zero_count == "error":
            failed = failed | zero.any()
        elif zero_count == "zero_weight":
            failed = failed | zero.all()
        value_checks.flag(failed, lambda: _counts_message(counts, zero_count, empty_class))
    if checks is None:
        value_checks.run()
    return counts


class CountsPolicy:
    """The ``zero_count`` rule of a hyper-parameter record, for the counts it is used with.

    ``empty_class`` says why a class without samples fails under ``"error"``.
    """

    zero_count: str
    empty_class: ClassVar[str] = EMPTY_CLASS

    def check_counts(
        self,
        counts: Counts,
        num_classes: int | None = None,
        *,
        source: str = "num_classes",
        checks: _checks.ValueChecks | None = None,
    ) -> torch.Tensor:
        """Validated float64 ``[C]`` counts under ``zero_count`` (see :func:`check_counts`)."""
        return check_counts(
            counts,
            num_classes,
            source=source,
            zero_count=self.zero_count,
            empty_class=self.empty_class,
            checks=checks,
        )


def _counts_tensor(counts: Sequence[Any] | np.ndarray) -> torch.Tensor:
    """A sequence or array of counts as a tensor; entries that are no number fit for one refused."""
    if isinstance(counts, np.ndarray) and counts.dtype != object:
        return torch.as_tensor(counts)
    for i, value in enumerate(counts):
        if isinstance(value, Sequence) and not isinstance(value, str):
            continue  # a nested sequence: its shape is refused below
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"counts must hold numbers of samples, got {value!r} ({type(value).__name__}) "
                f"at position {i}"
            )
        if isinstance(value, numbers.Integral) and not -(2**63) <= int(value) < 2**63:
            raise ValueError(
                f"counts must be sample counts that fit in int64, got {value} at position {i}"
            )
    try:
        return torch.as_tensor(counts)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"counts must be a sequence of sample counts, got {counts!r}") from error


def _counts_message(counts: torch.Tensor, zero_count: str | None, empty_class: str) -> str:
    """The message of the first problem of counts that failed :func:`check_counts`."""
    if not bool(torch.isfinite(counts).all()):
        return f"counts must be finite, got {_preview(counts)}"
    negative = (counts < 0).nonzero().flatten()
    if negative.numel() > 0:
        return (
            f"counts must be non-negative, got negative counts for class(es) "
            f"{_preview(negative)}: {_preview(counts[negative])}"
        )
    fractional = (counts != counts.round()).nonzero().flatten()
    if fractional.numel() > 0:
        return (
            f"counts must be whole numbers of samples, got non-integer counts for "
            f"class(es) {_preview(fractional)}: {_preview(counts[fractional])}"
        )
    missing = (counts == 0).nonzero().flatten()
    if zero_count == "error":
        return f"counts has no sample of class(es) {_preview(missing)}: {empty_class}"
    return (
        "counts is zero for every class; zero_count='zero_weight' would leave no "
        "class with a weight"
    )


def _check_beta(beta: float) -> float:
    return _checks.check_float(beta, "beta", low=0.0, high=1.0, high_inclusive=False)


def _effective_number(counts: torch.Tensor, beta: float) -> torch.Tensor:
    if beta == 0.0:
        # 0 ** n is 0 for n >= 1 and 1 for n = 0.
        return (counts > 0).to(torch.float64)
    # 1 - beta ** n as -expm1(n log beta): exact to rounding even for beta close to 1.
    return -torch.expm1(counts * math.log(beta)) / (1.0 - beta)


def effective_number(counts: Counts, beta: float) -> torch.Tensor:
    r"""Effective number of samples of each class.

    .. math::
        E_c = \frac{1 - \beta^{n_c}}{1 - \beta} = \sum_{k=0}^{n_c - 1} \beta^k ,

    which grows like :math:`n_c` for small counts and saturates at
    :math:`1 / (1 - \beta)`. :math:`\beta = 0` gives :math:`E_c = 1` for every
    class with at least one sample; :math:`\beta \to 1` gives :math:`E_c \to n_c`.
    Computed in float64 as :math:`-\mathrm{expm1}(n_c \log \beta) / (1 - \beta)`.

    Args:
        counts: ``[C]`` non-negative whole numbers of samples per class (a tensor
            of any real dtype, a NumPy array, or a sequence).
        beta: :math:`\beta \in [0, 1)`.

    Returns:
        ``[C]`` float64 tensor, on the device of ``counts``.

    Raises:
        TypeError: ``counts`` is not a tensor, array or sequence of numbers.
        ValueError: ``counts`` not 1-D, empty, negative or not whole numbers;
            ``beta`` outside ``[0, 1)``.

    References:
        Cui et al., "Class-Balanced Loss Based on Effective Number of Samples",
        CVPR 2019 (arXiv:1901.05555), Eq. 3.

    Examples:
        >>> from contrast_attn.functional import effective_number
        >>> effective_number([1, 2, 1000], beta=0.5)
        tensor([1.0000, 1.5000, 2.0000], dtype=torch.float64)
    """
    return _effective_number(check_counts(counts), _check_beta(beta))


def _weights(counts: torch.Tensor, beta: float, zero_count: str) -> torch.Tensor:
    """Class-balanced weights of counts validated by :func:`check_counts` with ``zero_count``."""
    num_classes = counts.shape[0]
    effective = _effective_number(counts, beta)
    if zero_count == "as_one":
        effective = torch.where(counts == 0, torch.ones_like(effective), effective)
    # 1 / E_c, and 0 for a class left without samples (zero_count="zero_weight").
    raw = torch.where(effective > 0, effective, math.inf).reciprocal()
    return raw * (num_classes / raw.sum())


def class_balanced_weights(
    counts: Counts, beta: float = 0.9999, *, zero_count: str = "error"
) -> torch.Tensor:
    r"""Per-class weights of the class-balanced loss, normalised to sum to C.

    .. math::
        w_c = \frac{C \, \tilde w_c}{\sum_{k=1}^{C} \tilde w_k}, \qquad
        \tilde w_c = \frac{1}{E_c} = \frac{1 - \beta}{1 - \beta^{n_c}},

    exactly as the reference code (``cifar_main.py``: ``weights / sum(weights) *
    num_classes``). :math:`\beta = 0` gives all weights 1 (no re-weighting),
    :math:`\beta \to 1` inverse-frequency weights :math:`w_c \propto 1 / n_c`.

    A class without any sample has an infinite weight; ``zero_count`` says what to do:
    ``"error"`` (default) raises a :class:`ValueError` naming the class,
    ``"as_one"`` weights it as if it had one sample (the largest weight; useful when
    a class is absent from a small training subset but expected later), and
    ``"zero_weight"`` gives it weight 0, the other classes' weights still summing to C.

    Args:
        counts: ``[C]`` non-negative whole numbers of samples per class.
        beta: :math:`\beta \in [0, 1)`; the paper's default is 0.9999.
        zero_count: ``"error"``, ``"as_one"`` or ``"zero_weight"``.

    Returns:
        ``[C]`` float64 weights, on the device of ``counts``.

    Raises:
        TypeError: ``counts`` is not a tensor, array or sequence of numbers.
        ValueError: Bad ``counts`` or ``beta``; a class with zero samples and
            ``zero_count="error"``.

    References:
        Cui et al., "Class-Balanced Loss Based on Effective Number of Samples",
        CVPR 2019 (arXiv:1901.05555), Eq. 4; reference code
        https://github.com/richardaecn/class-balanced-loss.

    Examples:
        >>> from contrast_attn.functional import class_balanced_weights
        >>> class_balanced_weights([900, 90, 10], beta=0.999)
        tensor([0.0444, 0.3063, 2.6493], dtype=torch.float64)
        >>> class_balanced_weights([900, 90, 10], beta=0.0)
        tensor([1., 1., 1.], dtype=torch.float64)
    """
    _checks.check_choice(zero_count, "zero_count", ZERO_COUNTS)
    beta = _check_beta(beta)
    return _weights(check_counts(counts, zero_count=zero_count), beta, zero_count)


@dataclass(frozen=True)
class ClassBalancedConfig(CountsPolicy):
    """The validated hyper-parameters of :func:`class_balanced_loss` (see there for each).

    Raises:
        TypeError: A hyper-parameter of the wrong type.
        ValueError: A hyper-parameter out of range, an unknown choice, or
            ``label_smoothing > 0`` with a loss other than ``"softmax"``.
    """

    beta: float = 0.9999
    loss_type: str = "softmax"
    gamma: float = 2.0
    reduction: str = "mean"
    ignore_index: int = -100
    label_smoothing: float = 0.0
    normalization: str = "reference"
    zero_count: str = "error"
    label_weighting: str = "reference"

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", _check_beta(self.beta))
        _checks.check_choice(self.loss_type, "loss_type", LOSS_TYPES)
        object.__setattr__(self, "gamma", _checks.check_float(self.gamma, "gamma", low=0.0))
        _checks.check_reduction(self.reduction)
        _checks.check_int(self.ignore_index, "ignore_index")
        smoothing = _checks.check_float(self.label_smoothing, "label_smoothing", low=0.0, high=1.0)
        object.__setattr__(self, "label_smoothing", smoothing)
        _checks.check_choice(self.normalization, "normalization", NORMALIZATIONS)
        _checks.check_choice(self.zero_count, "zero_count", ZERO_COUNTS)
        _checks.check_choice(self.label_weighting, "label_weighting", LABEL_WEIGHTINGS)
        if self.label_weighting == "per_label" and self.loss_type == "softmax":
            raise ValueError(
                "label_weighting='per_label' is for loss_type='sigmoid' or 'focal', got "
                "loss_type='softmax'"
            )
        if smoothing > 0 and self.loss_type != "softmax":
            raise ValueError(
                f"label_smoothing is only defined for loss_type='softmax', got "
                f"label_smoothing={smoothing} with loss_type={self.loss_type!r}"
            )


def _check_target(
    target: torch.Tensor,
    logits: torch.Tensor,
    loss_type: str,
    ignore_index: int,
    checks: _checks.ValueChecks,
) -> torch.Tensor:
    """Validate class indices ``[B]`` or (sigmoid/focal) multi-hot ``[B, C]`` targets."""
    _checks.check_tensor(target, "target")
    if target.ndim == 2:
        if loss_type == "softmax":
            raise ValueError(
                f"loss_type='softmax' needs target as class indices of shape [B] = "
                f"[{logits.shape[0]}]; "
                f"multi-hot targets [B, C] are for 'sigmoid' and 'focal', got shape "
                f"{tuple(target.shape)}"
            )
        if target.shape != logits.shape:
            raise ValueError(
                f"multi-hot target must have the shape of logits [B, C] = {list(logits.shape)}, "
                f"got shape {tuple(target.shape)}"
            )
        if target.is_complex():
            raise TypeError(f"multi-hot target must be real or bool, got dtype {target.dtype}")
        checks.values(target, "multi-hot target", unit_interval=True)
        return target
    return _checks.check_class_target(target, logits, ignore_index, checks)


def _binary_terms(x: torch.Tensor, y: torch.Tensor, loss_type: str, gamma: float) -> torch.Tensor:
    """Per-element sigmoid cross-entropy, times the focal modulator for ``"focal"``."""
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    if loss_type == "sigmoid":
        return bce
    # The reference's exp(-gamma*y*x - gamma*log1p(exp(-x))), with log1p(exp(-x)) written
    # as -logsigmoid(x) so that it cannot overflow: (1 - p)**gamma for y = 1, p**gamma for y = 0.
    modulator = torch.exp(gamma * (F.logsigmoid(x) - y * x))
    return modulator * bce


def class_balanced_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    counts: Counts,
    *,
    beta: float = 0.9999,
    loss_type: str = "softmax",
    gamma: float = 2.0,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    normalization: str = "reference",
    zero_count: str = "error",
    label_weighting: str = "reference",
) -> torch.Tensor:
    r"""Class-balanced softmax, sigmoid or focal loss (Cui et al., 2019).

    With the class weights :math:`w_c` of :func:`class_balanced_weights`, each sample
    is weighted by the weight of its class, :math:`\alpha_i = w_{y_i}` (for
    multi-hot targets :math:`\alpha_i = \sum_c y_{ic} w_c`, the reference code's
    ``reduce_sum(weights * one_hot, axis=1)`` applied as written):

    .. math::
        \ell_i^{softmax} = -\alpha_i \log \frac{e^{x_{i y_i}}}{\sum_c e^{x_{ic}}},
        \qquad
        \ell_i^{sigmoid} = \alpha_i \sum_{c=1}^{C} \mathrm{BCE}(x_{ic}, y_{ic}),
        \qquad
        \ell_i^{focal} = \alpha_i \sum_{c=1}^{C} m_{ic} \, \mathrm{BCE}(x_{ic}, y_{ic}),

    with :math:`\mathrm{BCE}(x, y) = -y \log \sigma(x) - (1 - y) \log(1 - \sigma(x))`
    and the reference's focal modulator
    :math:`m = \exp(-\gamma y x - \gamma \log(1 + e^{-x}))`, i.e. :math:`(1 - p)^\gamma`
    for a positive and :math:`p^\gamma` for a negative, :math:`p = \sigma(x)`. It is
    evaluated as :math:`\exp(\gamma(\log\sigma(x) - y x))`, which cannot overflow.
    :math:`\gamma = 0` gives the sigmoid loss.

    ``label_weighting="per_label"`` (sigmoid and focal) weights each label's term by
    its own class's weight instead of weighting the row by :math:`\alpha_i`:

    .. math::
        \ell_i^{sigmoid} = \sum_{c=1}^{C} w_c \, \mathrm{BCE}(x_{ic}, y_{ic}),
        \qquad
        \ell_i^{focal} = \sum_{c=1}^{C} w_c \, m_{ic} \, \mathrm{BCE}(x_{ic}, y_{ic}) .

    The reference form (the default) gives an all-negative row ("no finding",
    :math:`y_i = 0`) the weight :math:`\alpha_i = 0`, so such rows do not train the
    model at all; the per-label form keeps their negative terms, each weighted
    like its class. For one-hot rows the two forms differ in the negatives'
    weights (:math:`w_{y_i}` for every label in the reference form, :math:`w_c` per
    label here). With ``normalization="weight_sum"`` the per-label mean divides by
    :math:`\sum_{i,c} w_c` over the counted rows.

    ``reduction="mean"`` divides :math:`\sum_i \ell_i` by:

    - ``normalization="reference"`` (default): the number of samples for
      ``"softmax"`` (``tf.losses.softmax_cross_entropy`` with per-sample weights)
      and the number of positive labels :math:`\sum_{ic} y_{ic}` for ``"sigmoid"``
      and ``"focal"``, as in the reference code; both are the number of
      non-ignored samples for class-index targets. The loss is then *not* a
      weighted average: its scale follows the weights.
    - ``normalization="weight_sum"``: :math:`\sum_i \alpha_i`, the convention of
      ``F.cross_entropy(weight=w)``, to which the softmax form is then equal
      (with ``label_smoothing=0``).

    Samples whose target equals ``ignore_index`` contribute nothing and are not
    counted. ``label_smoothing`` (softmax only) replaces the one-hot target by
    :math:`(1 - \varepsilon)\, \mathrm{onehot}(y_i) + \varepsilon / C` and keeps the
    per-sample weight :math:`\alpha_i`; with all weights 1 this equals
    ``F.cross_entropy(label_smoothing=eps)`` (torch instead weights the smoothing
    term of each class by that class's weight). Logits are upcast to float32
    (float64 stays float64), also under fp16/bf16 autocast.

    Unlike a popular PyTorch port (vandit15/Class-balanced-loss-pytorch), the
    softmax form is a true softmax cross-entropy (not a binary cross-entropy of
    softmax probabilities, its issue #23) and the sigmoid form is weighted (its
    issue #10).

    Args:
        logits: ``[B, C]`` unnormalised scores.
        target: ``[B]`` integer class indices (``ignore_index`` allowed), or for
            ``"sigmoid"``/``"focal"`` a multi-hot ``[B, C]`` tensor with values in [0, 1].
        counts: ``[C]`` training samples per class (tensor, NumPy array or sequence).
        beta: :math:`\beta \in [0, 1)` of the effective number; 0 means no re-weighting.
        loss_type: ``"softmax"``, ``"sigmoid"`` or ``"focal"``.
        gamma: Focal exponent :math:`\gamma \ge 0` (``"focal"`` only).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[B]`` weighted per-sample
            losses, 0 for ignored samples).
        ignore_index: Target value to skip (class-index targets only).
        label_smoothing: :math:`\varepsilon \in [0, 1]`, ``"softmax"`` only.
        normalization: ``"reference"`` or ``"weight_sum"``, the denominator of the mean.
        zero_count: Treatment of classes with no sample, see :func:`class_balanced_weights`.
        label_weighting: ``"reference"`` (per-row :math:`\alpha_i`) or ``"per_label"``
            (each label's term by its class's weight; sigmoid and focal only).

    Returns:
        A scalar, or ``[B]`` with ``reduction="none"`` (float32, or float64 for
        float64 logits).

    Raises:
        TypeError: Non-tensor or non-floating logits, non-integer class targets.
        ValueError: logits not ``[B, C]`` or not finite; bad counts (negative, not
            whole, wrong length, a zero count with ``zero_count="error"``); target
            out of range or of a wrong shape; a hyper-parameter out of range.

    References:
        Cui et al., "Class-Balanced Loss Based on Effective Number of Samples",
        CVPR 2019 (arXiv:1901.05555); reference code
        https://github.com/richardaecn/class-balanced-loss (``src/cifar_main.py``).
        Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.

    Examples:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from contrast_attn.functional import class_balanced_loss
        >>> _ = torch.manual_seed(0)
        >>> logits, target = torch.randn(6, 3), torch.tensor([0, 0, 0, 1, 1, 2])
        >>> counts = [900, 90, 10]
        >>> loss = class_balanced_loss(logits, target, counts, beta=0.999)
        >>> focal = class_balanced_loss(logits, target, counts, loss_type="focal", gamma=2.0)
        >>> # beta = 0: no re-weighting, the plain cross-entropy
        >>> plain = class_balanced_loss(logits, target, counts, beta=0.0)
        >>> torch.allclose(plain, F.cross_entropy(logits, target))
        True
    """
    config = ClassBalancedConfig(
        beta,
        loss_type,
        gamma,
        reduction,
        ignore_index,
        label_smoothing,
        normalization,
        zero_count,
        label_weighting,
    )
    return class_balanced(config, logits, target, counts)


def class_balanced(
    config: ClassBalancedConfig, logits: torch.Tensor, target: torch.Tensor, counts: Counts
) -> torch.Tensor:
    """:func:`class_balanced_loss` with validated hyper-parameters (what the module calls)."""
    beta, loss_type, gamma = config.beta, config.loss_type, config.gamma
    reduction, ignore_index, label_smoothing = (
        config.reduction,
        config.ignore_index,
        config.label_smoothing,
    )
    _checks.check_floating_tensor(logits, "logits")
    _checks.check_ndim(logits, "logits", (2,), "[B, C]")
    num_classes = logits.shape[1]
    checks = _checks.ValueChecks()
    counts = config.check_counts(counts, num_classes, source="logits [B, C]", checks=checks)
    target = _check_target(target, logits, loss_type, ignore_index, checks)
    checks.values(logits, "logits")
    checks.run()
    weights = _weights(counts, beta, config.zero_count)
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=logits.device.type, enabled=False):
        x = logits.to(dtype)
        w = weights.to(device=x.device, dtype=dtype)
        target = target.to(x.device)
        if target.ndim == 2:
            y = target.to(dtype)
            alpha = y @ w
            positives = y.sum()
            counted = torch.ones_like(alpha)
        else:
            valid = target != ignore_index
            # int32/uint8 indices are valid targets; one_hot and indexing want int64.
            index = torch.where(valid, target, 0).long()
            alpha = w[index] * valid
            positives = valid.sum()
            counted = valid.to(dtype)
            # One-hot by comparison: F.one_hot reads the index range back to the host.
            y = (index[:, None] == torch.arange(num_classes, device=x.device)).to(dtype)
        row_weight = alpha
        if loss_type == "softmax":
            log_p = x.log_softmax(dim=1)
            per_sample = -(y * log_p).sum(dim=1)
            if label_smoothing > 0:
                per_sample = (1.0 - label_smoothing) * per_sample - label_smoothing * log_p.mean(1)
        elif config.label_weighting == "per_label":
            # Each label's term carries its class's weight, so the row itself counts once;
            # its total weight sum_c w_c enters the "weight_sum" mean.
            per_sample = (_binary_terms(x, y, loss_type, gamma) * w).sum(dim=1)
            row_weight, alpha = counted, counted * w.sum()
        else:
            per_sample = _binary_terms(x, y, loss_type, gamma).sum(dim=1)
        loss = row_weight * per_sample
    denominator = positives if config.normalization == "reference" else alpha.sum()
    return reduce_loss(loss, reduction, denominator)
