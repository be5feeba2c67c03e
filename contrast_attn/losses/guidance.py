"""The mask-guidance loss as an ``nn.Module`` (see :mod:`contrast_attn.functional`)."""

from __future__ import annotations

import torch

from .._config import ConfiguredModule
from ..functional.guidance import GuidanceConfig, mask_guidance

__all__ = ["MaskGuidanceLoss"]


class MaskGuidanceLoss(ConfiguredModule):
    r"""Pull an attention map (or a CAM) toward the lesion mask.

    See :func:`contrast_attn.functional.mask_guidance_loss`; e.g. for ``kind="bce"``

    .. math::
        \ell_b = -\frac{1}{HW} \sum_{ij} \left[ m_{ij} \log a_{ij}
            + (1 - m_{ij}) \log (1 - a_{ij}) \right]

    with the mask :math:`m` resized to the map by area. The hyper-parameters are
    held in :attr:`config`, a :class:`~contrast_attn.functional.guidance.GuidanceConfig`.

    Args:
        kind: ``"bce"``, ``"mse"`` or ``"dice"``.
        from_logits: Whether the map holds logits (recommended with ``"bce"``).
        smooth: Dice smoothing :math:`s > 0`.
        reduction: ``"mean"`` (over valid images), ``"sum"`` or ``"none"``.

    Shape:
        ``loss(attention, mask, valid=None)`` with ``attention`` ``[B, 1, H, W]``
        or ``[B, H, W]``, ``mask`` ``[B, 1, h, w]`` or ``[B, h, w]``, ``valid`` ``[B]``;
        returns a scalar (``[B]`` for ``reduction="none"``). For a volume,
        ``attention`` ``[B, 1, D, H, W]`` and ``mask`` ``[B, 1, d, h, w]`` or ``[B, d, h, w]``.

    Raises:
        TypeError: ``from_logits`` not a bool; in the call, as
            :func:`~contrast_attn.functional.mask_guidance_loss`.
        ValueError: Bad ``kind``, ``smooth`` or ``reduction``; in the call, as
            :func:`~contrast_attn.functional.mask_guidance_loss`.

    References:
        Li et al., "Tell Me Where to Look: Guided Attention Inference Network", CVPR 2018.

    Examples:
        >>> import torch
        >>> from contrast_attn import MaskGuidanceLoss
        >>> criterion = MaskGuidanceLoss(kind="dice", from_logits=True)
        >>> logits = torch.randn(2, 1, 7, 7, requires_grad=True)
        >>> mask = torch.zeros(2, 1, 224, 224)
        >>> mask[0, :, :112] = 1
        >>> criterion(logits, mask, valid=torch.tensor([True, False])).backward()
    """

    config: GuidanceConfig

    def __init__(
        self,
        kind: str = "bce",
        *,
        from_logits: bool = False,
        smooth: float = 1.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.config = GuidanceConfig(kind, from_logits, smooth, reduction)

    def forward(
        self, attention: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        return mask_guidance(self.config, attention, mask, valid)
