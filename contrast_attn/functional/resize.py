r"""Exact area resizing of lesion masks to a map's resolution.

Masks come at image resolution; they are brought to a feature map's
resolution by *area* resampling, so a feature cell that a lesion covers by
30 % gets the target 0.3.
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

    (and :math:`C` likewise along the width). When the sizes divide evenly this
    equals ``F.interpolate(mask, size, mode="area")``; otherwise it is the exact
    box filter, whereas torch's adaptive pooling uses overlapping integer windows.
    Enlarging repeats values (each output cell lies within one input cell, or
    averages the two it straddles).

    Args:
        mask: ``[B, 1, h, w]`` or ``[B, h, w]``; bool, integer or floating with
            values in [0, 1].
        size: ``(H, W)``, the target resolution.

    Returns:
        ``[B, 1, H, W]`` float32 (float64 for a float64 mask), values in [0, 1].

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
    """
    mask = _checks.check_spatial_mask(mask, "mask")
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(f"size must be a pair of positive ints (H, W), got {size!r}")
    return area_resize(mask, (size[0], size[1]))
