"""Exact area resizing of masks: the fraction of each output cell that a mask covers.

The bottom layer under :func:`contrast_attn.functional.resize_mask`, the
guidance loss, masked pooling and teacher forcing: inputs are already validated.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def area_resize(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    r"""Resize a validated ``[B, 1, *spatial]`` mask to ``size`` by area (no checks).

    One spatial axis at a time, with the integer overlaps :math:`R^{(a)}` of
    :func:`overlaps` along axis :math:`a` of input length :math:`n_a`:

    .. math::
        \tilde m = \frac{1}{n_1 n_2 \cdots} \, m \times_1 R^{(1)} \times_2 R^{(2)} \cdots

    (:math:`\times_a` contracts axis :math:`a`; :math:`R m C^\top / (h w)` for an
    image). Each step takes integer-weighted sums and divides by the integer row
    sum :math:`n_a`, so a full mask gives exactly 1 and an empty one 0, for any
    number of axes and any sizes. Axes whose size does not change are left as
    they are.

    Returns:
        float32 (float64 for a float64 mask), computed outside autocast.
    """
    dtype = torch.float64 if mask.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=mask.device.type, enabled=False):
        values = mask.to(dtype)
        first = values.ndim - len(size)
        for axis, dst in enumerate(size, start=first):
            src = values.shape[axis]
            if src != dst:
                weight = overlaps(src, dst, values.device, dtype)
                values = (values.movedim(axis, -1) @ weight.T / src).movedim(-1, axis)
        return values
