"""NT-Xent (SimCLR) and supervised contrastive (SupCon) losses.

Both losses share one core, :func:`~contrast_attn._rows.contrastive_rows`: for
each anchor row it computes the log-softmax of its cosine similarities to every
*other* row and averages over the anchor's positives. NT-Xent is the special
case in which the positives of a view are the other views of the same sample.

Each loss has one record of hyper-parameters (:class:`NTXentConfig`,
:class:`SupConConfig`), validated once when built; the function builds it per
call, the module once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .. import _checks
from .._reduction import reduce_loss
from .._rows import (
    DENSE_MAX_PAIRS,
    Negatives,
    Positives,
    Temperature,
    contrastive_rows,
    normalize_rows,
)
from ..distributed import all_reduce_sum, gather_no_grad, gather_with_grad, rank_and_world_size

__all__ = [
    "DENSE_MAX_PAIRS",
    "NTXentConfig",
    "Negatives",
    "Positives",
    "SupConConfig",
    "SupConResult",
    "check_contrastive_common",
    "check_negatives",
    "contrastive_rows",
    "nt_xent",
    "nt_xent_loss",
    "supcon",
    "supcon_loss",
]

VARIANTS = ("out", "in")
NO_POSITIVE = ("ignore", "zero", "error")


def check_contrastive_common(
    temperature: Temperature, reduction: str, gather: bool, chunk_size: int | None
) -> Temperature:
    """Validate the hyper-parameters every contrastive loss has; return the temperature."""
    checked = _checks.check_temperature(temperature)
    _checks.check_reduction(reduction)
    _checks.check_bool(gather, "gather")
    if chunk_size is not None:
        _checks.check_int(chunk_size, "chunk_size", low=1)
    return checked


def check_negatives(beta: float, tau_plus: float) -> Negatives:
    """Validate the hard-negative :math:`\\beta \\ge 0` and debiasing :math:`\\tau^+ \\in [0, 1)`."""
    return Negatives(
        _checks.check_float(beta, "hard_negative_beta", low=0.0),
        _checks.check_float(tau_plus, "debias_tau_plus", low=0.0, high=1.0, high_inclusive=False),
    )


def _validate_shared(record: NTXentConfig | SupConConfig) -> None:
    """Validate the hyper-parameters NT-Xent and SupCon share, in place (frozen record)."""
    temperature = check_contrastive_common(
        record.temperature, record.reduction, record.gather, record.chunk_size
    )
    object.__setattr__(record, "temperature", temperature)
    negatives = check_negatives(record.hard_negative_beta, record.debias_tau_plus)
    object.__setattr__(record, "hard_negative_beta", negatives.beta)
    object.__setattr__(record, "debias_tau_plus", negatives.tau_plus)


@dataclass(frozen=True, eq=False)
class NTXentConfig:
    """The validated hyper-parameters of :func:`nt_xent_loss` (see there for each).

    Raises:
        TypeError: A hyper-parameter of the wrong type.
        ValueError: A hyper-parameter out of range.
    """

    temperature: Temperature = 0.5
    reduction: str = "mean"
    gather: bool = False
    chunk_size: int | None = None
    hard_negative_beta: float = 0.0
    debias_tau_plus: float = 0.0

    def __post_init__(self) -> None:
        _validate_shared(self)

    @property
    def negatives(self) -> Negatives:
        """The negatives' weighting (``contrast_attn._rows.Negatives``)."""
        return Negatives(self.hard_negative_beta, self.debias_tau_plus)


@dataclass(frozen=True, eq=False)
class SupConConfig:
    """The validated hyper-parameters of :func:`supcon_loss` (see there for each).

    Raises:
        TypeError: A hyper-parameter of the wrong type.
        ValueError: A hyper-parameter out of range or an unknown choice.
    """

    temperature: Temperature = 0.1
    base_temperature: float | None = None
    variant: str = "out"
    no_positive: str = "ignore"
    reduction: str = "mean"
    gather: bool = False
    chunk_size: int | None = None
    hard_negative_beta: float = 0.0
    debias_tau_plus: float = 0.0

    def __post_init__(self) -> None:
        _validate_shared(self)
        _checks.check_choice(self.variant, "variant", VARIANTS)
        _checks.check_choice(self.no_positive, "no_positive", NO_POSITIVE)
        if self.base_temperature is not None:
            base = _checks.check_float(
                self.base_temperature, "base_temperature", low=0.0, low_inclusive=False
            )
            object.__setattr__(self, "base_temperature", base)

    @property
    def negatives(self) -> Negatives:
        """The negatives' weighting (``contrast_attn._rows.Negatives``)."""
        return Negatives(self.hard_negative_beta, self.debias_tau_plus)

    @property
    def scale(self) -> Temperature:
        """The loss scale :math:`\\tau / \\tau_b` (1 without a base temperature)."""
        if self.base_temperature is None:
            return 1.0
        return self.temperature / self.base_temperature


class SupConResult(NamedTuple):
    """The result of :func:`supcon`.

    Attributes:
        loss: The reduced loss (or ``[V * B]`` per anchor with ``reduction="none"``).
        num_anchors_without_positive: 0-d long tensor (not synchronised to the host).
    """

    loss: torch.Tensor
    num_anchors_without_positive: torch.Tensor


def nt_xent_loss(
    z1: torch.Tensor,
    z2: torch.Tensor | None = None,
    *,
    temperature: float = 0.5,
    reduction: str = "mean",
    gather: bool = False,
    chunk_size: int | None = None,
    ref_features: torch.Tensor | None = None,
    hard_negative_beta: float = 0.0,
    debias_tau_plus: float = 0.0,
) -> torch.Tensor:
    """NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

    Embeddings are L2-normalised inside. The :math:`N = VB` rows (view-major:
    row :math:`vB + b` is view :math:`v` of sample :math:`b`) are all anchors; the
    positives of a row are the other views of the same sample, and the denominator
    runs over every other row:

    .. math::
        \\ell_i = -\\frac{1}{V - 1} \\sum_{p \\in P(i)}
            \\log \\frac{\\exp(z_i \\cdot z_p / \\tau)}{\\sum_{k \\ne i} \\exp(z_i \\cdot z_k / \\tau)},
        \\qquad \\mathcal{L} = \\frac{1}{N} \\sum_{i=1}^{N} \\ell_i .

    For :math:`V = 2` this is SimCLR's loss, numerically equal to lightly's and
    pytorch-metric-learning's ``NTXentLoss`` at the same temperature. The
    similarities and log-sum-exp are computed in float32 (float64 for float64
    input), also under fp16/bf16 autocast.

    Args:
        z1: ``[B, D]`` first view, or ``[B, V, D]`` with all ``V >= 2`` views.
        z2: ``[B, D]`` second view, or ``None`` when ``z1`` holds all views.
        temperature: :math:`\\tau > 0`: a number, or a one-element tensor (e.g. a
            learnable temperature), which receives its gradient.
        reduction: ``"mean"`` over anchors, ``"sum"``, or ``"none"`` for the
            ``[V * B]`` per-anchor losses in view-major order.
        gather: All-gather embeddings across ``torch.distributed`` ranks (with
            gradients); each rank's anchors see the global batch, and the mean of
            the ranks' losses equals the single-process loss on the whole batch.
        chunk_size: Rows per tile of the memory-bounded kernel; ``None`` chooses
            automatically (dense for small batches).
        ref_features: ``[R, D]`` extra keys that are not anchors (e.g. a
            :class:`~contrast_attn.MemoryQueue`'s contents): L2-normalised inside,
            negatives of every anchor, in every denominator. They are not gathered:
            under ``gather=True`` every rank should pass the same keys.
        hard_negative_beta: :math:`\\beta \\ge 0`: negatives weighted by
            :math:`e^{\\beta s}` (Robinson et al.).
        debias_tau_plus: :math:`\\tau^+ \\in [0, 1)`: debiased negatives (Chuang et al.).
            With both 0 (the default) the loss is the plain one above.

    With :math:`\\beta` or :math:`\\tau^+` set, the negatives' part of the denominator,
    :math:`\\sum_{k \\notin P(i)} e^{s_{ik}}`, becomes (with :math:`M` negatives)

    .. math::
        N_i = \\max\\Big(\\frac{1}{1 - \\tau^+}\\Big(M \\frac{\\sum_{q} e^{(1 + \\beta) s_{iq}}}
            {\\sum_{q} e^{\\beta s_{iq}}} - \\tau^+ M \\frac{1}{|P(i)|}\\sum_{p} e^{s_{ip}}\\Big),
            \\; M e^{-1/\\tau}\\Big),
        \\qquad
        \\ell_i = -\\frac{1}{|P(i)|} \\sum_{p \\in P(i)}
            \\log \\frac{e^{s_{ip}}}{\\sum_{p' \\in P(i)} e^{s_{ip'}} + N_i},

    which for :math:`V = 2` is the loss of Robinson et al. (their code's
    :math:`\\beta` multiplies :math:`s = z \\cdot z' / \\tau`, as here).

    Returns:
        A scalar, or ``[V * B]`` with ``reduction="none"``.

    Raises:
        TypeError: Non-tensor or non-floating embeddings.
        ValueError: Mismatched view shapes, fewer than 2 views, batch of 1,
            non-finite embeddings, bad temperature or reduction.

    References:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual
        Representations", ICML 2020 (arXiv:2002.05709). Robinson et al.,
        "Contrastive Learning with Hard Negative Samples", ICLR 2021. Chuang et al.,
        "Debiased Contrastive Learning", NeurIPS 2020.

    Examples:
        >>> import torch
        >>> from contrast_attn.functional import nt_xent_loss
        >>> _ = torch.manual_seed(0)
        >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
        >>> loss = nt_xent_loss(z1, z2, temperature=0.5)
        >>> loss.shape
        torch.Size([])
        >>> nt_xent_loss(torch.stack([z1, z2], dim=1)).item() == loss.item()
        True
    """
    config = NTXentConfig(
        temperature, reduction, gather, chunk_size, hard_negative_beta, debias_tau_plus
    )
    return nt_xent(config, z1, z2, ref_features)


def nt_xent(
    config: NTXentConfig,
    z1: torch.Tensor,
    z2: torch.Tensor | None = None,
    ref_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`nt_xent_loss` with validated hyper-parameters (what the module calls)."""
    rows, num_views = _nt_xent_rows(z1, z2)
    batch = rows.shape[0] // num_views
    _check_batch(batch, config.gather)
    checks = _checks.ValueChecks()
    checks.values(rows, "z1" if z2 is None else "z1/z2")
    refs = _check_refs(ref_features, None, rows, None, checks)
    if isinstance(config.temperature, torch.Tensor):
        checks.positive(config.temperature, "temperature")
    checks.run()
    return _contrast(
        rows,
        num_views,
        None,
        None,
        refs,
        negatives=config.negatives,
        temperature=config.temperature,
        scale=1.0,
        variant="out",
        no_positive="zero",
        reduction=config.reduction,
        gather=config.gather,
        chunk_size=config.chunk_size,
    ).loss


def _nt_xent_rows(z1: torch.Tensor, z2: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """Checked views as view-major rows ``[V * B, D]`` (row ``v * B + b``), and ``V``."""
    _checks.check_floating_tensor(z1, "z1")
    if z2 is None:
        _checks.check_ndim(z1, "z1", (3,), "[B, V, D] (all views) when z2 is None")
        _checks.check_nonempty(z1, "z1", (2,), "D")
        if z1.shape[1] < 2:
            raise ValueError(
                f"z1 must hold V >= 2 views along dim 1 ([B, V, D]), got V = {z1.shape[1]} "
                f"(shape {tuple(z1.shape)})"
            )
        return _view_major(z1), z1.shape[1]
    _checks.check_floating_tensor(z2, "z2")
    _checks.check_ndim(z1, "z1", (2,), "[B, D] when z2 is given")
    _checks.check_nonempty(z1, "z1", (1,), "D")
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must have the same shape [B, D], got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}"
        )
    if z1.dtype != z2.dtype:
        raise TypeError(f"z1 and z2 must have the same dtype, got {z1.dtype} and {z2.dtype}")
    return torch.cat([z1, z2]), 2


def _view_major(views: torch.Tensor) -> torch.Tensor:
    """``[B, V, D]`` → ``[V * B, D]``, row ``v * B + b`` (as ``torch.cat`` of the views)."""
    return views.transpose(0, 1).reshape(-1, views.shape[-1])


def supcon_loss(
    features: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    mask: torch.Tensor | None = None,
    temperature: float = 0.1,
    base_temperature: float | None = None,
    variant: str = "out",
    no_positive: str = "ignore",
    reduction: str = "mean",
    gather: bool = False,
    chunk_size: int | None = None,
    ref_features: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    hard_negative_beta: float = 0.0,
    debias_tau_plus: float = 0.0,
) -> torch.Tensor:
    """Supervised contrastive loss (SupCon) of Khosla et al.

    The :math:`N = VB` rows (view-major) are L2-normalised and all serve as
    anchors. The positives :math:`P(i)` of row :math:`i` are the other rows with
    the same label (or ``mask[b_i, b_j] = 1``); the denominator runs over every
    other row, :math:`A(i) = \\{k \\ne i\\}`. With :math:`s_{ik} = z_i \\cdot z_k / \\tau`:

    .. math::
        \\ell_i^{out} = -\\frac{\\tau}{\\tau_b} \\frac{1}{|P(i)|} \\sum_{p \\in P(i)}
            \\log \\frac{e^{s_{ip}}}{\\sum_{k \\in A(i)} e^{s_{ik}}},
        \\qquad
        \\ell_i^{in} = -\\frac{\\tau}{\\tau_b} \\log \\frac{1}{|P(i)|} \\sum_{p \\in P(i)}
            \\frac{e^{s_{ip}}}{\\sum_{k \\in A(i)} e^{s_{ik}}} .

    ``variant="out"`` (:math:`\\mathcal{L}^{sup}_{out}`, the form of the paper's
    published code and the better one in its experiments) is the default. With
    neither labels nor mask the positives are the other views of the same sample
    and the loss equals :func:`nt_xent_loss`.

    Multi-hot labels ``[B, C]`` (co-occurring findings) weight each pair by the
    overlap of the two label sets, the Jaccard index
    :math:`w_{ik} = |Y_i \\cap Y_k| / |Y_i \\cup Y_k|` (1 for identical sets, 0 for
    disjoint ones); the positives are the pairs with :math:`w_{ik} > 0` and

    .. math::
        \\ell_i^{out} = -\\frac{\\tau}{\\tau_b} \\frac{1}{\\sum_{p} w_{ip}} \\sum_{p \\in P(i)}
            w_{ip} \\log \\frac{e^{s_{ip}}}{\\sum_{k \\in A(i)} e^{s_{ik}}},
        \\qquad
        \\ell_i^{in} = -\\frac{\\tau}{\\tau_b} \\log \\frac{\\sum_{p} w_{ip} e^{s_{ip}}}
            {\\sum_{p} w_{ip} \\sum_{k \\in A(i)} e^{s_{ik}}} .

    One-hot rows give the integer-label loss. The weighted-positive form is that of
    Dufumier et al.'s y-aware InfoNCE (weights from a kernel on the labels); the
    Jaccard weight on label sets is our choice. A row with no label (an empty set,
    e.g. "no finding") has no positive and falls under ``no_positive``; it is still
    a negative of every other row.

    Anchors without a positive (a class present once with ``V = 1``) are handled by
    ``no_positive``: ``"ignore"`` leaves them out of the mean, ``"zero"`` counts them
    as 0 (the reference code's behaviour), ``"error"`` raises. Their number is never
    silent: :class:`~contrast_attn.SupConLoss` records it in
    ``last_num_anchors_without_positives``.

    Args:
        features: ``[B, V, D]`` (V views) or ``[B, D]`` (one view) embeddings.
        labels: ``[B]`` integer class labels, ``[B, C]`` multi-hot label sets (0/1,
            any real dtype; see below), or ``None``.
        mask: ``[B, B]`` explicit positive relation (bool or 0/1); exclusive with
            ``labels``. The diagonal is expanded to the other views of a sample.
        temperature: :math:`\\tau > 0`: a number, or a one-element tensor (e.g. a
            learnable temperature), which receives its gradient.
        base_temperature: :math:`\\tau_b`; ``None`` means :math:`\\tau_b = \\tau`
            (no scaling). The reference code uses 0.07 for both.
        variant: ``"out"`` or ``"in"``.
        no_positive: ``"ignore"``, ``"zero"`` or ``"error"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[V * B]`` per anchor,
            view-major, 0 for anchors without a positive).
        gather: All-gather features and labels across ranks (with gradients);
            not available with ``mask``.
        chunk_size: Rows per tile of the memory-bounded kernel; ``None`` = automatic.
        ref_features: ``[R, D]`` extra keys that are not anchors (e.g. a
            :class:`~contrast_attn.MemoryQueue`'s contents), L2-normalised inside.
            They join every anchor's denominator, and its positives when
            ``ref_labels`` match. Not gathered: under ``gather=True`` every rank
            should pass the same keys.
        ref_labels: ``[R]`` (or ``[R, C]`` multi-hot, like ``labels``) labels of
            ``ref_features``; required with ``labels``, not allowed without.
            Without labels (and without mask) the reference keys are negatives only.
        hard_negative_beta: :math:`\\beta \\ge 0`, hard-negative importance weights
            (Robinson et al.); see :func:`nt_xent_loss` for the formula.
        debias_tau_plus: :math:`\\tau^+ \\in [0, 1)`, debiased negatives (Chuang et al.).

    Returns:
        A scalar, or ``[V * B]`` with ``reduction="none"``.

    Raises:
        TypeError: Wrong types or dtypes (e.g. float labels).
        ValueError: Bad shapes, both labels and mask, bad hyper-parameters,
            non-finite features, or (``no_positive="error"``) an anchor without positive.

    References:
        Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020 (arXiv:2004.11362).
        Dufumier et al., "Contrastive Learning with Continuous Proxy Meta-Data for 3D
        MRI Classification", MICCAI 2021 (weighted positives).

    Examples:
        >>> import torch
        >>> from contrast_attn.functional import supcon_loss
        >>> _ = torch.manual_seed(0)
        >>> features = torch.randn(8, 2, 16)            # 8 samples, 2 views
        >>> labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> supcon_loss(features, labels, temperature=0.1).shape
        torch.Size([])
    """
    config = SupConConfig(
        temperature,
        base_temperature,
        variant,
        no_positive,
        reduction,
        gather,
        chunk_size,
        hard_negative_beta,
        debias_tau_plus,
    )
    return supcon(config, features, labels, mask, ref_features, ref_labels).loss


def supcon(
    config: SupConConfig,
    features: torch.Tensor,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    ref_features: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
) -> SupConResult:
    """:func:`supcon_loss` with validated hyper-parameters, and the anchors without a positive.

    One host synchronisation at most (none with checks off, unless
    ``no_positive="error"``): the value checks of the inputs and the count of
    anchors without a positive are read together, after the computation
    (no input value can make it fail).
    """
    views, labels, mask = _supcon_views(features, labels, mask)
    if config.gather and mask is not None:
        raise ValueError("gather=True is not available with an explicit mask; pass labels instead")
    batch, num_views = views.shape[0], views.shape[1]
    _check_batch(batch, config.gather)
    checks = _checks.ValueChecks()
    if mask is not None:
        mask = _checks.check_bool_mask(mask, "mask", (batch, batch), "[B, B]", checks)
        mask = mask.to(views.device)
    checks.values(features, "features")
    if labels is not None and labels.ndim == 2:
        checks.binary(labels, "labels")
    if mask is not None and ref_features is not None:
        raise ValueError("ref_features are not available with an explicit mask; pass labels")
    refs = _check_refs(ref_features, ref_labels, features, labels, checks)
    if isinstance(config.temperature, torch.Tensor):
        checks.positive(config.temperature, "temperature")
    result = _contrast(
        _view_major(views),
        num_views,
        labels,
        mask,
        refs,
        negatives=config.negatives,
        temperature=config.temperature,
        scale=config.scale,
        variant=config.variant,
        no_positive=config.no_positive,
        reduction=config.reduction,
        gather=config.gather,
        chunk_size=config.chunk_size,
    )
    if config.no_positive == "error" and not torch.compiler.is_compiling():
        missing = result.num_anchors_without_positive
        num_rows = batch * num_views
        if not checks.enabled:
            checks = _checks.ValueChecks()
            checks.enabled = True
        checks.flag(
            missing > 0,
            lambda: (
                f"{int(missing)} of {num_rows} anchors have no positive (no other row with "
                f"the same label); pass no_positive='ignore' or 'zero' to allow this"
            ),
        )
    checks.run()
    return result


def _supcon_views(
    features: torch.Tensor, labels: torch.Tensor | None, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    _checks.check_floating_tensor(features, "features")
    _checks.check_ndim(features, "features", (2, 3), "[B, D] or [B, V, D]")
    _checks.check_nonempty(features, "features", (-1,), "D")
    views = features if features.ndim == 3 else features[:, None]
    batch = views.shape[0]
    if views.shape[1] < 1:
        raise ValueError(f"features must hold at least one view, got shape {tuple(features.shape)}")
    if labels is not None and mask is not None:
        raise ValueError("pass either labels or mask to supcon_loss, not both")
    if labels is not None:
        labels = _check_labels_or_sets(labels, "labels", batch).to(views.device)
    if mask is not None:
        mask = _checks.check_tensor(mask, "mask")
        if tuple(mask.shape) != (batch, batch):
            raise ValueError(
                f"mask must have shape [B, B] = {[batch, batch]}, got shape {tuple(mask.shape)}"
            )
    if labels is None and mask is None and views.shape[1] < 2:
        raise ValueError(
            "supcon_loss without labels or mask needs V >= 2 views ([B, V, D]) so that each "
            f"anchor has a positive, got features of shape {tuple(features.shape)}"
        )
    return views, labels, mask


def _check_refs(
    ref_features: torch.Tensor | None,
    ref_labels: torch.Tensor | None,
    features: torch.Tensor,
    labels: torch.Tensor | None,
    checks: _checks.ValueChecks,
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Checked reference keys ``[R, D]`` and their labels (as ``labels``), or None."""
    if ref_features is None:
        if ref_labels is not None:
            raise ValueError("ref_labels were given without ref_features")
        return None
    _checks.check_floating_tensor(ref_features, "ref_features")
    dim = features.shape[-1]
    if ref_features.ndim != 2 or ref_features.shape[1] != dim:
        raise ValueError(
            f"ref_features must have shape [R, D] with D = {dim} (the features' dimension), "
            f"got shape {tuple(ref_features.shape)}"
        )
    if (labels is None) != (ref_labels is None):
        raise ValueError(
            "ref_labels must be given exactly when labels are: with labels, the reference "
            "keys need theirs; without, they are negatives only"
        )
    checks.values(ref_features, "ref_features")
    ref_features = ref_features.to(features.device)
    if ref_labels is None or labels is None:
        return ref_features, None
    _checks.check_tensor(ref_labels, "ref_labels")
    if ref_labels.ndim != labels.ndim or ref_labels.shape[1:] != labels.shape[1:]:
        raise ValueError(
            f"ref_labels must have shape {['R', *labels.shape[1:]]} like labels "
            f"{list(labels.shape)}, got shape {tuple(ref_labels.shape)}"
        )
    if ref_labels.shape[0] != ref_features.shape[0]:
        raise ValueError(
            f"ref_labels must hold one label per reference key, got {ref_labels.shape[0]} "
            f"labels for {ref_features.shape[0]} keys"
        )
    ref_labels = _check_labels_or_sets(ref_labels, "ref_labels", ref_features.shape[0])
    if ref_labels.ndim == 2:
        checks.binary(ref_labels, "ref_labels")
    return ref_features, ref_labels.to(labels.device)


def _check_labels_or_sets(labels: torch.Tensor, name: str, rows: int) -> torch.Tensor:
    """Class indices ``[rows]`` (integer) or multi-hot label sets ``[rows, C]`` (any real dtype)."""
    tensor = _checks.check_tensor(labels, name)
    if tensor.ndim not in (1, 2):
        raise ValueError(
            f"{name} must have shape [B] = [{rows}] (class indices) or [B, C] (multi-hot "
            f"label sets), got shape {tuple(tensor.shape)}"
        )
    if tensor.ndim == 1:
        return _checks.check_labels(tensor, name, rows)
    if tensor.is_complex():
        raise TypeError(f"{name} must be a real tensor of 0/1 label sets, got {tensor.dtype}")
    if tensor.shape[0] != rows:
        raise ValueError(
            f"{name} must have shape [B, C] with B = {rows} (one label set per sample), "
            f"got shape {tuple(tensor.shape)}"
        )
    return tensor


def _contrast(
    rows: torch.Tensor,
    num_views: int,
    labels: torch.Tensor | None,
    mask: torch.Tensor | None,
    refs: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    *,
    negatives: Negatives | None = None,
    temperature: Temperature,
    scale: Temperature,
    variant: str,
    no_positive: str,
    reduction: str,
    gather: bool,
    chunk_size: int | None,
) -> SupConResult:
    """Validated view-major rows ``[V * B, D]`` → (loss, number of anchors without a positive)."""
    batch = rows.shape[0] // num_views
    device = rows.device
    anchor_index = None  # without gather every row is an anchor, in order
    with torch.autocast(device_type=device.type, enabled=False):
        keys = normalize_rows(rows)
        global_batch = batch
        if gather:
            rank, world = rank_and_world_size()
            # Gather [B, V, D] blocks, so that the global rows stay view-major.
            z_all = gather_with_grad(keys.view(num_views, batch, -1).transpose(0, 1))
            global_batch = z_all.shape[0]
            keys = z_all.transpose(0, 1).reshape(num_views * global_batch, -1)
            sample = torch.arange(batch, device=device)
            anchor_index = (
                torch.arange(num_views, device=device)[:, None] * global_batch
                + rank * batch
                + sample
            ).reshape(-1)
        if mask is not None:
            positives = Positives(matrix=mask.repeat(num_views, num_views))
        elif labels is not None and labels.ndim == 2:
            sets = (gather_no_grad(labels) if gather else labels).to(keys.dtype)
            positives = Positives(label_sets=sets.repeat(num_views, 1))
        elif labels is not None:
            all_labels = gather_no_grad(labels) if gather else labels
            positives = Positives(key_labels=all_labels.repeat(num_views))
        else:
            positives = Positives(views=num_views)
        if refs is not None:
            keys, positives, anchor_index = _with_refs(keys, positives, anchor_index, refs)
        summed = reduction != "none"
        loss, num_pos = contrastive_rows(
            keys,
            anchor_index,
            positives,
            temperature=temperature,
            variant=variant,
            chunk_size=chunk_size,
            summed=summed,
            negatives=negatives,
        )
    if not isinstance(scale, float) or scale != 1.0:
        loss = loss * scale
    has_pos = num_pos > 0
    num_without = (~has_pos).sum()
    if reduction != "mean":
        return SupConResult(loss, num_without)
    if no_positive == "ignore":
        counted = has_pos.sum()
    elif not gather:
        # Every anchor counts: a plain mean (no guard on the batch size under export).
        return SupConResult(loss / num_pos.shape[0], num_without)
    else:
        counted = torch.full((), num_pos.shape[0], device=device)
    if gather:
        # Global count / world size: the mean over ranks of the rank losses is the global mean.
        world = rank_and_world_size()[1]
        return SupConResult(reduce_loss(loss, "mean", all_reduce_sum(counted) / world), num_without)
    return SupConResult(reduce_loss(loss, "mean", counted), num_without)


def _with_refs(
    keys: torch.Tensor,
    positives: Positives,
    anchor_index: torch.Tensor | None,
    refs: tuple[torch.Tensor, torch.Tensor | None],
) -> tuple[torch.Tensor, Positives, torch.Tensor]:
    """Append the reference keys after the batch's keys; they are never anchors."""
    ref_features, ref_labels = refs
    if anchor_index is None:
        anchor_index = torch.arange(keys.shape[0], device=keys.device)
    ref_keys = normalize_rows(ref_features).to(keys.dtype)
    if positives.label_sets is not None:
        assert ref_labels is not None
        sets = torch.cat([positives.label_sets, ref_labels.to(keys.dtype)])
        return torch.cat([keys, ref_keys]), Positives(label_sets=sets), anchor_index
    positives = positives.as_labels(keys.shape[0], keys.device)
    labels = positives.key_labels
    assert labels is not None
    if ref_labels is None:
        # Sample labels are < N: label N is one no anchor has, so the keys are negatives only.
        ref_labels = labels.new_full((ref_keys.shape[0],), keys.shape[0])
    merged = Positives(key_labels=torch.cat([labels, ref_labels.to(labels.dtype)]))
    return torch.cat([keys, ref_keys]), merged, anchor_index


def _check_batch(batch: int, gather: bool) -> None:
    world = rank_and_world_size()[1] if gather else 1
    if batch * world < 2:
        raise ValueError(
            f"the batch must hold at least 2 samples (a contrastive loss needs negatives), "
            f"got batch size {batch}"
        )
