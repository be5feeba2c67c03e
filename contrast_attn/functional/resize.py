r"""Exact area resizing of lesion masks to a map's resolution.

Masks come at image (or volume) resolution; they are brought to a feature
map's resolution by *area* resampling, so a feature cell (or voxel) that a
lesion covers by 30 % gets the target 0.3.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import _checks
from .._resize import area_resize

__all__ = ["resize_mask"]


def resize_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    r"""Resize a lesion mask to a feature map's resolution by area (exact fractional coverage).

    Each output cell is the area-weighted mean of the input cells it overlaps,
    so a binary mask becomes the fraction of each cell that the lesion covers:

    .. math::
        \tilde m_{ij} = \sum_{k, l} R_{ik} \, m_{kl} \, C_{jl}, \qquad
        R_{ik} = \frac{|[i h / H, (i + 1) h / H) \cap [k, k + 1)|}{h / H}

    (and :math:`C` likewise along the width). A volume ``[B, 1, d, h, w]`` is
    resized to ``(D, H, W)`` the same way along its three axes,
    :math:`\tilde m_{ijk} = \sum_{p, q, r} S_{ip} R_{jq} C_{kr} \, m_{pqr}`:
    each output voxel gets the fraction of its volume that the lesion covers, and
    the mean over the volume is conserved. A full mask gives exactly 1. When the
    sizes divide evenly this equals ``F.interpolate(mask, size, mode="area")``;
    otherwise it is the exact box filter, whereas torch's adaptive pooling uses
    overlapping integer windows. Enlarging repeats values (each output cell lies
    within one input cell, or averages the two it straddles).

    Args:
        mask: ``[B, 1, h, w]`` or ``[B, h, w]`` (with a pair ``size``), or
            ``[B, 1, d, h, w]`` or ``[B, d, h, w]`` (with a triple); bool, integer
            or floating with values in [0, 1].
        size: ``(H, W)`` or ``(D, H, W)``, the target resolution.

    Returns:
        ``[B, 1, H, W]`` or ``[B, 1, D, H, W]`` float32 (float64 for a float64
        mask), values in [0, 1].

    Raises:
        TypeError: ``mask`` is not a tensor.
        ValueError: Bad mask shape, values outside [0, 1], or bad ``size``.

    References:
        The box filter of ``F.interpolate(mode="area")`` (torch's adaptive average
        pooling), made exact for sizes that do not divide; Li et al., "Tell Me
        Where to Look: Guided Attention Inference Network", CVPR 2018 (masks
        supervising a low-resolution map).

    Examples:
        >>> import torch
        >>> from contrast_attn.functional import resize_mask
        >>> mask = torch.zeros(1, 3, 3)
        >>> mask[0, 0, 0] = 1                    # one pixel of nine
        >>> resize_mask(mask, (2, 2))[0, 0]
        tensor([[0.4444, 0.0000],
                [0.0000, 0.0000]])
        >>> volume = torch.zeros(1, 1, 6, 6, 6)
        >>> volume[..., :3, :3, :3] = 1          # one octant of a volume
        >>> small = resize_mask(volume, (3, 3, 3))
        >>> small[0, 0, :2, :2, :2].flatten()    # voxel (1, 1, 1) is covered by 1/8
        tensor([1.0000, 0.5000, 0.5000, 0.2500, 0.5000, 0.2500, 0.2500, 0.1250])
        >>> float(small.mean() * 6**3)          # the lesion's 27 voxels, conserved
        27.0
    """
    if (
        not isinstance(size, Sequence)
        or len(size) not in (2, 3)
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(
            f"size must be a pair of positive ints (H, W), or a triple (D, H, W) for a "
            f"volume, got {size!r}"
        )
    mask = _checks.check_spatial_mask(mask, "mask", spatial_dims=len(size))
    return area_resize(mask, tuple(size))
