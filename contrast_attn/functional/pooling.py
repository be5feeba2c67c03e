r"""Masked average pooling: one feature vector for the lesion region, one for the rest."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .. import _checks
from .._resize import area_resize

__all__ = ["MaskedPool", "masked_average_pool", "pool_regions"]


class MaskedPool(NamedTuple):
    """The result of :func:`masked_average_pool`.

    Attributes:
        lesion: ``[B, C]`` mean feature over the lesion region (0 where it is empty).
        background: ``[B, C]`` mean feature over the complement (0 where it is empty).
        lesion_area: ``[B]`` fraction of the feature map (or volume) that the lesion covers.
        background_area: ``[B]`` ``1 - lesion_area``.

    Examples:
        >>> import torch
        >>> from contrast_attn.functional import MaskedPool, masked_average_pool
        >>> pooled = masked_average_pool(torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2))
        >>> isinstance(pooled, MaskedPool), pooled.lesion_area, pooled.background
        (True, tensor([1.]), tensor([[0., 0.]]))
    """

    lesion: torch.Tensor
    background: torch.Tensor
    lesion_area: torch.Tensor
    background_area: torch.Tensor


def pool_regions(features: torch.Tensor, mask: torch.Tensor) -> MaskedPool:
    """:func:`masked_average_pool` of validated inputs.

    ``mask`` is ``[B, 1, *spatial]`` (any resolution) on the features' device.
    """
    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=features.device.type, enabled=False):
        values = features.to(dtype).flatten(2)
        weight = area_resize(mask.to(dtype), features.shape[2:]).flatten(1)
        pooled = []
        areas = []
        for region in (weight, 1 - weight):
            mass = region.sum(dim=1)
            total = torch.einsum("bcn,bn->bc", values, region)
            # An empty region pools to 0 (and a zero gradient), never 0 / 0.
            pooled.append(total / torch.where(mass > 0, mass, torch.ones_like(mass))[:, None])
            areas.append(mass / weight.shape[1])
    return MaskedPool(pooled[0], pooled[1], areas[0], areas[1])


def masked_average_pool(features: torch.Tensor, mask: torch.Tensor) -> MaskedPool:
    r"""Average a feature map over the lesion region and over its complement.

    The mask is resized to the feature map by area (:func:`resize_mask`), giving
    each cell its lesion coverage :math:`w_{ij} \in [0, 1]`; then

    .. math::
        u_b = \frac{\sum_{ij} w_{bij} f_{b \cdot ij}}{\sum_{ij} w_{bij}}, \qquad
        v_b = \frac{\sum_{ij} (1 - w_{bij}) f_{b \cdot ij}}{\sum_{ij} (1 - w_{bij})} .

    A volume ``[B, C, D, H, W]`` is pooled the same way over its voxels, the mask
    ``[B, 1, d, h, w]`` resized to :math:`D \times H \times W` by volume coverage.
    A region of zero area (no lesion, or a lesion covering everything) pools to
    the zero vector; its area, returned alongside, tells the two cases apart.
    Sums are taken in float32 (float64 for float64 features), also under autocast,
    and the results are returned in that dtype.

    Args:
        features: ``[B, C, H, W]`` feature map, or ``[B, C, D, H, W]`` for a volume.
        mask: ``[B, 1, h, w]`` or ``[B, h, w]`` lesion mask in [0, 1] of any
            resolution (``[B, 1, d, h, w]`` or ``[B, d, h, w]`` for a volume).

    Returns:
        A :class:`MaskedPool` ``(lesion [B, C], background [B, C], lesion_area [B],
        background_area [B])``.

    Raises:
        TypeError: Non-tensor inputs or non-floating features.
        ValueError: Bad shapes, batch mismatch, mask values outside [0, 1], NaN/Inf.

    References:
        Zhang et al., "SG-One: Similarity Guidance Network for One-Shot Semantic
        Segmentation", IEEE Trans. Cybernetics 2020 (masked average pooling);
        Wei et al., "Deep Pneumonia", 2022 (arXiv:2207.11393).

    Examples:
        >>> import torch
        >>> from contrast_attn.functional import masked_average_pool
        >>> features = torch.arange(4.0).reshape(1, 1, 2, 2)      # [[0, 1], [2, 3]]
        >>> mask = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])         # top row
        >>> pooled = masked_average_pool(features, mask)
        >>> pooled.lesion, pooled.background, pooled.lesion_area
        (tensor([[0.5000]]), tensor([[2.5000]]), tensor([0.5000]))
    """
    _checks.check_feature_map(features, "features")
    checks = _checks.ValueChecks()
    mask = _checks.check_spatial_mask(mask, "mask", spatial_dims=features.ndim - 2, checks=checks)
    _checks.check_same_batch(features, "features", mask, "mask")
    checks.values(features, "features")
    checks.run()
    return pool_regions(features, mask.to(features.device))
