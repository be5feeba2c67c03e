"""Masked average pooling as a module (see :func:`contrast_attn.functional.masked_average_pool`)."""

from __future__ import annotations

import torch
from torch import nn

from ..functional.pooling import MaskedPool, masked_average_pool

__all__ = ["MaskedAveragePool"]


class MaskedAveragePool(nn.Module):
    r"""Average a feature map over the lesion region and over its complement.

    .. math::
        u_b = \frac{\sum_{ij} w_{bij} f_{b \cdot ij}}{\sum_{ij} w_{bij}}, \qquad
        v_b = \frac{\sum_{ij} (1 - w_{bij}) f_{b \cdot ij}}{\sum_{ij} (1 - w_{bij})}

    with :math:`w` the mask resized to the feature map by area. The module form
    of :func:`~contrast_attn.functional.masked_average_pool`, for models that
    hold their pooling as a sub-module.

    Shape:
        ``features [B, C, H, W]``, ``mask [B, 1, h, w]`` or ``[B, h, w]`` →
        :class:`~contrast_attn.functional.MaskedPool` of ``[B, C]``, ``[B, C]``,
        ``[B]``, ``[B]``; a volume ``features [B, C, D, H, W]`` with ``mask
        [B, 1, d, h, w]`` or ``[B, d, h, w]`` alike.

    Raises:
        TypeError: As :func:`~contrast_attn.functional.masked_average_pool`.
        ValueError: As :func:`~contrast_attn.functional.masked_average_pool`.

    References:
        Zhang et al., "SG-One", IEEE Trans. Cybernetics 2020 (masked average pooling).

    Examples:
        >>> import torch
        >>> from contrast_attn import MaskedAveragePool
        >>> pool = MaskedAveragePool()
        >>> pooled = pool(torch.randn(2, 64, 7, 7), torch.ones(2, 1, 224, 224))
        >>> pooled.lesion.shape, pooled.background_area.tolist()
        (torch.Size([2, 64]), [0.0, 0.0])
    """

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> MaskedPool:
        return masked_average_pool(features, mask)
