r"""The mask-guidance loss: pull an attention map (or a CAM) toward the lesion mask.

A radiologist's lesion mask supervises a spatial map of the network, either
the map of :class:`~contrast_attn.MaskGuidedAttention` or the class activation
map of a plain classifier (GAIN-style extra supervision); the mask is brought
to the map's resolution by area (:func:`~contrast_attn.functional.resize_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import _checks
from .._reduction import reduce_loss
from .._resize import area_resize
from .cam import class_activation_map
from .resize import resize_mask

__all__ = [
    "GuidanceConfig",
    "class_activation_map",
    "mask_guidance",
    "mask_guidance_loss",
    "resize_mask",
]

KINDS = ("bce", "mse", "dice")


@dataclass(frozen=True)
class GuidanceConfig:
    """The validated hyper-parameters of :func:`mask_guidance_loss` (see there).

    Raises:
        TypeError: ``from_logits`` not a bool, ``smooth`` not a number.
        ValueError: Unknown ``kind`` or ``reduction``, ``smooth <= 0``.
    """

    kind: str = "bce"
    from_logits: bool = False
    smooth: float = 1.0
    reduction: str = "mean"

    def __post_init__(self) -> None:
        _checks.check_choice(self.kind, "kind", KINDS)
        _checks.check_bool(self.from_logits, "from_logits")
        _checks.check_reduction(self.reduction)
        smooth = _checks.check_float(self.smooth, "smooth", low=0.0, low_inclusive=False)
        object.__setattr__(self, "smooth", smooth)


def mask_guidance_loss(
    attention: torch.Tensor,
    mask: torch.Tensor,
    *,
    kind: str = "bce",
    valid: torch.Tensor | None = None,
    from_logits: bool = False,
    smooth: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Pull a spatial attention map (or a CAM) toward the lesion mask.

    The mask is resized to the map's :math:`H \times W` by area
    (:func:`resize_mask`), giving soft targets :math:`m \in [0, 1]`. With
    :math:`a = \sigma(x)` for logits :math:`x` (``from_logits=True``) or the given
    probabilities, the loss of image :math:`b` over its :math:`HW` cells is

    .. math::
        \ell_b^{bce} = -\frac{1}{HW} \sum_{ij} \left[ m_{ij} \log a_{ij}
            + (1 - m_{ij}) \log (1 - a_{ij}) \right], \qquad
        \ell_b^{mse} = \frac{1}{HW} \sum_{ij} (a_{ij} - m_{ij})^2,

    .. math::
        \ell_b^{dice} = 1 - \frac{2 \sum_{ij} a_{ij} m_{ij} + s}
            {\sum_{ij} a_{ij} + \sum_{ij} m_{ij} + s} .

    An empty mask on an annotated image means "no lesion here" (a normal chest)
    and is a legitimate target: BCE and MSE push the map to 0; the smoothed dice
    becomes :math:`\sum a / (\sum a + s)`, which is 0 for an all-zero map and
    grows with the attention mass (the convention of the Laplace-smoothed soft
    dice; ``smooth`` :math:`s > 0` keeps it defined). Images with ``valid = 0``
    (no annotation) contribute nothing; ``"mean"`` averages over the valid images
    (0, still attached to the graph, when there is none).

    A volume (CT, MRI) is the same with the :math:`DHW` voxels of a
    ``[B, 1, D, H, W]`` map in place of the cells: the mask ``[B, 1, d, h, w]``
    is resized to :math:`D \times H \times W` by volume coverage and the sums run
    over every voxel.

    BCE on logits uses ``binary_cross_entropy_with_logits`` and is exact for any
    logit; on probabilities, :func:`torch.nn.functional.binary_cross_entropy`
    clamps the logarithms at -100, so a saturated wrong map (a = 1 where m = 0)
    gets almost no gradient: prefer the logits (``MaskGuidedAttention.last_logits``).
    Everything is computed in float32 (float64 for float64 input), also under
    autocast.

    Args:
        attention: ``[B, 1, H, W]`` or ``[B, H, W]`` map (``[B, 1, D, H, W]`` for
            a volume): probabilities in [0, 1], or logits with ``from_logits=True``.
        mask: ``[B, 1, h, w]`` or ``[B, h, w]`` lesion mask in [0, 1] (bool,
            integer or floating), of any resolution; ``[B, 1, d, h, w]`` or
            ``[B, d, h, w]`` for a volume.
        kind: ``"bce"``, ``"mse"`` or ``"dice"``.
        valid: ``[B]`` bool (or 0/1): images whose mask is annotated; ``None`` = all.
        from_logits: Whether ``attention`` holds logits.
        smooth: :math:`s > 0`, the dice smoothing (in units of map cells).
        reduction: ``"mean"`` (over valid images), ``"sum"``, or ``"none"``
            (``[B]``, 0 for invalid images).

    Returns:
        A scalar, or ``[B]`` with ``reduction="none"``.

    Raises:
        TypeError: Non-tensor inputs or a non-floating ``attention``.
        ValueError: Bad shapes, batch mismatch, values outside [0, 1], NaN/Inf,
            or bad ``kind``, ``smooth``, ``reduction``, ``valid``.

    References:
        Li et al., "Tell Me Where to Look: Guided Attention Inference Network",
        CVPR 2018 (attention supervised by masks). Milletari et al., "V-Net",
        3DV 2016 (soft dice).

    Examples:
        >>> import torch
        >>> from contrast_attn.functional import mask_guidance_loss
        >>> logits = torch.zeros(2, 1, 7, 7, requires_grad=True)   # attention 0.5
        >>> mask = torch.zeros(2, 224, 224)
        >>> mask[0, 64:160, 64:160] = 1                              # image 1: no lesion
        >>> loss = mask_guidance_loss(logits, mask, from_logits=True)
        >>> round(loss.item(), 4)                                    # log 2
        0.6931
        >>> dice = mask_guidance_loss(logits, mask, kind="dice", from_logits=True, reduction="none")
        >>> dice.detach()                    # 1 - (2 * 4.5 + 1) / (24.5 + 9 + 1), 24.5 / 25.5
        tensor([0.7101, 0.9608])
    """
    config = GuidanceConfig(kind, from_logits, smooth, reduction)
    return mask_guidance(config, attention, mask, valid)


def mask_guidance(
    config: GuidanceConfig,
    attention: torch.Tensor,
    mask: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`mask_guidance_loss` with validated hyper-parameters (what the module calls)."""
    kind, from_logits, smooth, reduction = (
        config.kind,
        config.from_logits,
        config.smooth,
        config.reduction,
    )
    _checks.check_floating_tensor(attention, "attention")
    checks = _checks.ValueChecks()
    attention = _checks.check_spatial_mask(
        attention, "attention", spatial_dims=None, unit_interval=not from_logits, checks=checks
    )
    spatial = attention.shape[2:]
    mask = _checks.check_spatial_mask(mask, "mask", spatial_dims=len(spatial), checks=checks)
    _checks.check_same_batch(attention, "attention", mask, "mask")
    if valid is not None:
        batch = attention.shape[0]
        valid = _checks.check_bool_mask(valid, "valid", (batch,), "[B]", checks)
        valid = valid.to(attention.device)
    checks.run()
    mask = mask.to(attention.device)

    dtype = torch.float64 if attention.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=attention.device.type, enabled=False):
        x = attention.to(dtype).flatten(1)
        target = area_resize(mask.to(dtype), spatial).flatten(1)
        if kind == "bce":
            cell = (
                F.binary_cross_entropy_with_logits(x, target, reduction="none")
                if from_logits
                else F.binary_cross_entropy(x, target, reduction="none")
            )
            loss = cell.mean(dim=1)
        else:
            prob = torch.sigmoid(x) if from_logits else x
            if kind == "mse":
                loss = (prob - target).square().mean(dim=1)
            else:
                overlap = (prob * target).sum(dim=1)
                total = prob.sum(dim=1) + target.sum(dim=1)
                loss = 1 - (2 * overlap + smooth) / (total + smooth)
    if valid is None:
        return reduce_loss(loss, reduction)
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return reduce_loss(loss, reduction, valid.sum())
