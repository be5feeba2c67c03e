"""Exact area resizing of masks: the fraction of each output cell that a mask covers.

The bottom layer under :func:`contrast_attn.functional.resize_mask`, the
guidance loss, masked pooling and teacher forcing: inputs are already validated.
"""

from __future__ import annotations

import torch

__all__ = ["area_resize", "overlaps"]


def overlaps(src: int, dst: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[dst, src]`` overlap lengths of output cell ``i`` and input cell ``k``; rows sum to ``src``."""
    # In units of 1 / dst input cells, output cell i spans [i*src, (i+1)*src) and input cell
    # k spans [k*dst, (k+1)*dst): integer overlaps, exact for any pair of sizes.
    out_lo = torch.arange(dst, device=device)[:, None] * src
    in_lo = torch.arange(src, device=device)[None, :] * dst
    overlap = torch.minimum(out_lo + src, in_lo + dst) - torch.maximum(out_lo, in_lo)
    return overlap.clamp(min=0).to(dtype)


def area_resize(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    r"""Resize a validated ``[B, 1, h, w]`` mask to ``size`` by area (no checks).

    .. math::
        \tilde m = R \, m \, C^\top / (h w),

    with :math:`R` and :math:`C` the integer overlaps of :func:`overlaps`, so a
    full mask gives exactly 1 and an empty one 0.

    Returns:
        float32 (float64 for a float64 mask), computed outside autocast.
    """
    dtype = torch.float64 if mask.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=mask.device.type, enabled=False):
        values = mask.to(dtype)
        height, width = values.shape[-2:]
        if (height, width) == tuple(size):
            return values
        rows = overlaps(height, size[0], values.device, dtype)
        cols = overlaps(width, size[1], values.device, dtype)
        return rows @ values @ cols.T / (height * width)
