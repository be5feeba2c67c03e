r"""The contrastive feature regulariser: lesion features together, away from the background."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .. import _checks
from .._reduction import reduce_loss
from .._rows import Positives, Temperature, contrastive_rows, normalize_rows
from ..distributed import all_reduce_sum, gather_variable_with_grad, rank_and_world_size
from .contrastive import VARIANTS, check_contrastive_common
from .pooling import pool_regions

__all__ = [
    "RegularizerConfig",
    "RegularizerRefs",
    "RegularizerResult",
    "contrastive_feature_regularizer",
    "regularize",
]

Projection = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, eq=False)
class RegularizerConfig:
    """The validated hyper-parameters of :func:`contrastive_feature_regularizer` (see there).

    Raises:
        TypeError: A hyper-parameter of the wrong type.
        ValueError: A hyper-parameter out of range or an unknown choice.
    """

    temperature: Temperature = 0.1
    variant: str = "out"
    min_area: float = 0.0
    reduction: str = "mean"
    gather: bool = False
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        temperature = check_contrastive_common(
            self.temperature, self.reduction, self.gather, self.chunk_size
        )
        object.__setattr__(self, "temperature", temperature)
        _checks.check_choice(self.variant, "variant", VARIANTS)
        min_area = _checks.check_float(
            self.min_area, "min_area", low=0.0, high=1.0, high_inclusive=False
        )
        object.__setattr__(self, "min_area", min_area)


class RegularizerResult(NamedTuple):
    """The result of :func:`regularize`.

    Attributes:
        loss: The reduced loss (``[B]`` with ``reduction="none"``).
        num_anchors: 0-d long tensor, this rank's lesion anchors with a positive.
    """

    loss: torch.Tensor
    num_anchors: torch.Tensor


class RegularizerRefs(NamedTuple):
    """Reference embeddings of the regulariser: keys that are not anchors.

    Attributes:
        features: ``[R, D]`` embeddings in the projected space.
        labels: ``[R]`` classes of the lesion embeddings, or ``None`` (one class).
        kind: ``[R]`` 1 lesion, 0 background, -1 no part.
    """

    features: torch.Tensor
    labels: torch.Tensor | None
    kind: torch.Tensor | None

    def checked(self, labelled: bool, checks: _checks.ValueChecks) -> RegularizerRefs:
        """Shapes and dtypes checked; value checks (finite, kinds in {-1, 0, 1}) join ``checks``."""
        features = _checks.check_floating_tensor(self.features, "ref_features")
        _checks.check_ndim(features, "ref_features", (2,), "[R, D]")
        rows = features.shape[0]
        if self.kind is None:
            raise ValueError("ref_kind (1 lesion, 0 background, -1 no part) is required")
        kind = _checks.check_labels(self.kind, "ref_kind", rows)
        if labelled != (self.labels is not None):
            raise ValueError(
                "ref_labels must be given exactly when labels are (the classes of the "
                "reference lesion embeddings)"
            )
        labels = None
        if self.labels is not None:
            labels = _checks.check_labels(self.labels, "ref_labels", rows).to(features.device)
        checks.values(features, "ref_features")
        if checks.enabled:
            checks.require(
                ((kind >= -1) & (kind <= 1)).all(),
                lambda: (
                    "ref_kind must hold 1 (lesion), 0 (background) or -1 (no part), got "
                    f"{torch.unique(kind).tolist()[:5]}"
                ),
            )
        return RegularizerRefs(features, labels, kind.to(features.device))

    def append_to(
        self, keys: torch.Tensor, key_info: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and ``[M, 3]`` (class, is lesion, takes part) rows with the references appended."""
        assert self.kind is not None
        kind = self.kind.long()
        labels = torch.zeros_like(kind) if self.labels is None else self.labels.long()
        info = torch.stack([labels, (kind == 1).long(), (kind >= 0).long()], dim=1)
        ref_keys = normalize_rows(self.features).to(keys.dtype)
        return torch.cat([keys, ref_keys]), torch.cat([key_info, info.to(key_info.device)])


def contrastive_feature_regularizer(
    features: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    temperature: float = 0.1,
    projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
    valid: torch.Tensor | None = None,
    variant: str = "out",
    min_area: float = 0.0,
    reduction: str = "mean",
    gather: bool = False,
    chunk_size: int | None = None,
    ref_features: torch.Tensor | None = None,
    ref_labels: torch.Tensor | None = None,
    ref_kind: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Supervised-contrastive term on pooled lesion and background features.

    Per image :math:`b`, the feature map is pooled over the lesion and over its
    complement (:func:`masked_average_pool`, mask resized by area), giving
    :math:`u_b` and :math:`v_b`; both are projected by :math:`g` (``projection``,
    identity by default) and L2-normalised:
    :math:`z_b = g(u_b) / \lVert g(u_b) \rVert`, :math:`n_b = g(v_b) / \lVert g(v_b) \rVert`.
    Among the annotated images (``valid``), :math:`L` holds those whose lesion
    covers more than ``min_area`` of the map and :math:`N` those whose background
    does. Lesion embeddings are the anchors; the positives of anchor
    :math:`i \in L` are the other lesion embeddings of its class,
    :math:`P(i) = \{p \in L \setminus \{i\} : y_p = y_i\}`, and its denominator
    runs over all other lesion embeddings and all background embeddings (its own
    image's included). With :math:`s(x, y) = x \cdot y / \tau` and
    :math:`D_i = \sum_{k \in L \setminus \{i\}} e^{s(z_i, z_k)} + \sum_{j \in N} e^{s(z_i, n_j)}`:

    .. math::
        \ell_i^{out} = -\frac{1}{|P(i)|} \sum_{p \in P(i)} \log \frac{e^{s(z_i, z_p)}}{D_i},
        \qquad
        \ell_i^{in} = -\log \frac{1}{|P(i)|} \sum_{p \in P(i)} \frac{e^{s(z_i, z_p)}}{D_i},

    .. math::
        \mathcal{L} = \frac{1}{|A|} \sum_{i \in A} \ell_i, \qquad A = \{i \in L : |P(i)| > 0\} .

    So background embeddings are negatives only, never anchors or positives, and
    an image without lesion contributes only its (whole-image) background
    embedding as a negative. This is :func:`supcon_loss`'s core with background
    keys given a label that no anchor has.

    The paper (Wei et al., 2022) states only the idea: lesion-region features are
    pulled together and pushed away from non-lesion features. These choices are
    ours, and each is a parameter: average pooling of each region (soft, by area
    coverage); one lesion and one background embedding per image; positives are
    same-class lesions of *other* images (``labels=None``: every lesion is one
    class, "lesion vs. background"); lesions of other classes are negatives too,
    as in SupCon; SupCon's :math:`\mathcal{L}_{out}` (``variant``) at
    :math:`\tau = 0.1` (``temperature``); a projection head before the
    normalisation (``projection``); anchors without a positive leave the mean.

    Shapes do not depend on the data: ``projection`` is called once on all
    :math:`2B` pooled vectors (the :math:`B` lesion vectors, then the :math:`B`
    background vectors; a region of zero area pools to the zero vector), and
    the regions outside :math:`L` and :math:`N` are masked out of the
    contrast rather than selected, so the function never waits for the device
    and compiles as one graph. A ``projection`` with batch normalisation
    therefore normalises over all :math:`2B` vectors. With fewer than two lesion
    embeddings in the batch (in particular with no lesion pixel at all) no
    anchor has a positive and the result is 0, attached to the graph of
    ``features`` and of the projection's parameters with a zero gradient, never
    NaN (``DistributedDataParallel`` sees every parameter used on every rank).
    The pooled vectors are passed to ``projection`` in the dtype of
    ``features`` (a half-precision model gets half-precision input);
    similarities and log-sum-exp are computed in float32 (float64 for float64
    input), also under autocast.

    With ``gather=True`` under ``torch.distributed`` the projected embeddings
    (lesion and background; batch sizes may differ per rank) and their labels
    are all-gathered with gradients (:func:`~contrast_attn.distributed.gather_variable_with_grad`);
    each rank's anchors are its own lesion embeddings, contrasted with the keys of
    every rank, and the mean is taken over the global anchor count divided by the
    world size. The mean of the ranks' losses, and with ``DistributedDataParallel``
    the gradients, are then those of one process on the concatenated batch, as
    long as ``projection`` maps each vector on its own (a batch-normalised head
    uses per-rank statistics). A rank without lesion embeddings still takes part
    in every collective and contributes a graph-connected 0; with fewer than two
    lesion embeddings in the global batch every rank returns 0.

    Args:
        features: ``[B, C, H, W]`` feature map, or ``[B, C, D, H, W]`` for a
            volume (CT, MRI; pooled over its voxels).
        mask: ``[B, 1, h, w]`` or ``[B, h, w]`` lesion mask in [0, 1], any
            resolution (``[B, 1, d, h, w]`` or ``[B, d, h, w]`` for a volume).
        labels: ``[B]`` integer class of each image, or ``None`` (one class).
        temperature: :math:`\tau > 0`, a number or a one-element tensor (which
            receives its gradient).
        projection: Callable mapping pooled vectors ``[2B, C]`` to ``[2B, D]`` (e.g. a
            :class:`~contrast_attn.ProjectionHead`), applied to all lesion and
            background vectors in one call; ``None`` = identity.
        valid: ``[B]`` bool (or 0/1): images whose mask is annotated; the others
            take no part. ``None`` = all.
        variant: ``"out"`` or ``"in"`` (SupCon's :math:`\mathcal{L}_{out}` / :math:`\mathcal{L}_{in}`).
        min_area: A region takes part when it covers more than this fraction of
            the feature map, in [0, 1).
        reduction: ``"mean"`` over anchors with a positive, ``"sum"``, or ``"none"``
            (``[B]``: image :math:`b`'s anchor loss, 0 where it is no such anchor).
        gather: All-gather embeddings across ``torch.distributed`` ranks (with
            gradients), as above; outside a process group the same as ``False``.
        chunk_size: Rows per tile of the memory-bounded kernel; ``None`` = automatic.
        ref_features: ``[R, D]`` reference embeddings in the projected space (e.g. a
            :class:`~contrast_attn.MemoryQueue`'s contents), L2-normalised inside: keys
            that are not anchors. A reference lesion embedding is a positive of the
            anchors of its class and a negative of the others; a reference background
            embedding is a negative of every anchor. Not gathered across ranks.
        ref_labels: ``[R]`` integer classes of the reference lesion embeddings
            (ignored for background ones); ``None`` with ``labels=None``.
        ref_kind: ``[R]`` integer kind of each reference embedding: 1 lesion,
            0 background, -1 no part (required with ``ref_features``).

    Returns:
        A scalar, or ``[B]`` with ``reduction="none"``.

    Raises:
        TypeError: Wrong types or dtypes (non-floating features, float labels).
        ValueError: Bad shapes, batch mismatch, mask values outside [0, 1],
            NaN/Inf features, bad hyper-parameters, a projection output not ``[M, D]``.

    References:
        Wei et al., "Deep Pneumonia: Attention-Based Contrastive Learning for
        Class-Imbalanced Pneumonia Lesion Recognition in Chest X-rays", 2022
        (arXiv:2207.11393). Khosla et al., "Supervised Contrastive Learning",
        NeurIPS 2020.

    Examples:
        >>> import torch
        >>> from contrast_attn.functional import contrastive_feature_regularizer
        >>> _ = torch.manual_seed(0)
        >>> features = torch.randn(4, 16, 7, 7, requires_grad=True)
        >>> mask = torch.zeros(4, 1, 224, 224)
        >>> mask[:3, :, 64:160, 32:128] = 1                 # image 3: no lesion
        >>> loss = contrastive_feature_regularizer(features, mask, torch.tensor([0, 0, 1, 1]))
        >>> loss.backward()
        >>> empty = contrastive_feature_regularizer(features, torch.zeros(4, 1, 7, 7))
        >>> empty.item(), empty.requires_grad
        (0.0, True)
    """
    config = RegularizerConfig(temperature, variant, min_area, reduction, gather, chunk_size)
    refs = None if ref_features is None else RegularizerRefs(ref_features, ref_labels, ref_kind)
    if refs is None and (ref_labels is not None or ref_kind is not None):
        raise ValueError("ref_labels and ref_kind need ref_features")
    return regularize(
        config, features, mask, labels, valid=valid, projection=projection, refs=refs
    ).loss


def regularize(
    config: RegularizerConfig,
    features: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    valid: torch.Tensor | None = None,
    projection: Projection | None = None,
    refs: RegularizerRefs | None = None,
    on_keys: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
) -> RegularizerResult:
    """:func:`contrastive_feature_regularizer` with validated hyper-parameters, and the count.

    ``on_keys(keys, labels, kind)``, when given, receives this call's ``[2B, D]``
    normalised keys (lesion rows, then background rows, before any gathering), their
    labels and kinds (1 lesion, 0 background, -1 no part), e.g. to enqueue them.
    """
    _checks.check_feature_map(features, "features")
    checks = _checks.ValueChecks()
    mask = _checks.check_spatial_mask(mask, "mask", spatial_dims=features.ndim - 2, checks=checks)
    _checks.check_same_batch(features, "features", mask, "mask")
    if projection is not None and not callable(projection):
        raise TypeError(f"projection must be callable or None, got {type(projection).__name__}")
    batch, device = features.shape[0], features.device
    if labels is not None:
        labels = _checks.check_labels(labels, "labels", batch).to(device)
    if valid is not None:
        valid = _checks.check_bool_mask(valid, "valid", (batch,), "[B]", checks).to(device)
    checks.values(features, "features")
    if refs is not None:
        refs = refs.checked(labels is not None, checks)
    if isinstance(config.temperature, torch.Tensor):
        checks.positive(config.temperature, "temperature")
    checks.run()

    pooled = pool_regions(features, mask.to(device))
    has_lesion = pooled.lesion_area > config.min_area
    has_background = pooled.background_area > config.min_area
    if valid is not None:
        has_lesion &= valid
        has_background &= valid
    # Fixed shapes: every image gives one lesion and one background row; the rows of
    # regions that take no part are masked out of the contrast, not selected.
    vectors = torch.cat([pooled.lesion, pooled.background])
    projected = vectors if projection is None else projection(vectors.to(features.dtype))
    if (
        not isinstance(projected, torch.Tensor)
        or projected.ndim != 2
        or projected.shape[0] != vectors.shape[0]
        or not projected.is_floating_point()
        or projected.shape[1] == 0
    ):
        raise ValueError(
            f"projection must map pooled vectors [M, C] = {list(vectors.shape)} to a floating "
            f"tensor [M, D], got {_checks.describe(projected)}"
        )
    if refs is not None and refs.features.shape[1] != projected.shape[1]:
        raise ValueError(
            f"ref_features must have shape [R, D] with D = {projected.shape[1]} (the projected "
            f"embeddings' dimension), got shape {tuple(refs.features.shape)}"
        )
    lesion_labels = labels.long() if labels is not None else has_lesion.new_zeros(batch).long()
    # Per key row: class, is it a lesion row, does it take part.
    key_info = torch.stack(
        [
            torch.cat([lesion_labels, torch.zeros_like(lesion_labels)]),
            torch.cat([torch.ones_like(lesion_labels), torch.zeros_like(lesion_labels)]),
            torch.cat([has_lesion, has_background]).long(),
        ],
        dim=1,
    )
    with torch.autocast(device_type=device.type, enabled=False):
        keys = normalize_rows(projected)
        if on_keys is not None:
            kind = torch.where(key_info[:, 2].bool(), key_info[:, 1], -1)
            on_keys(keys.detach(), key_info[:, 0], kind)
        offset = 0
        if config.gather:
            # Own lesion anchors against the keys of every rank; this rank's rows start at offset.
            keys, offset = gather_variable_with_grad(keys)
            key_info = gather_variable_with_grad(key_info)[0]
        if refs is not None:
            keys, key_info = refs.append_to(keys, key_info)
        key_labels, is_lesion, key_valid = key_info.unbind(dim=1)
        # Background keys get a label that no anchor has: negatives only.
        key_labels = torch.where(is_lesion.bool(), key_labels, key_labels.max() + 1)
        rows, num_pos = contrastive_rows(
            keys,
            offset + torch.arange(batch, device=device),
            Positives(key_labels=key_labels, key_valid=key_valid.bool()),
            temperature=config.temperature,
            variant=config.variant,
            chunk_size=config.chunk_size,
            summed=config.reduction != "none",
        )
    num_anchors = (num_pos > 0).sum()
    if config.reduction != "mean":
        return RegularizerResult(rows, num_anchors)
    if config.gather:
        # Global count / world size: the mean over ranks of the rank losses is the global mean.
        world = rank_and_world_size()[1]
        return RegularizerResult(
            reduce_loss(rows, "mean", all_reduce_sum(num_anchors) / world), num_anchors
        )
    return RegularizerResult(reduce_loss(rows, "mean", num_anchors), num_anchors)
