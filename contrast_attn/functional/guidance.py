r"""Mask guidance: area resizing of lesion masks, the guidance loss, and the CAM.

A radiologist's lesion mask supervises a spatial map of the network, either
the map of :class:`~contrast_attn.MaskGuidedAttention` or the class activation
map of a plain classifier (GAIN-style extra supervision). Masks come at image
resolution; they are brought to the map's resolution by *area* resampling, so
a feature cell that a lesion covers by 30 % gets the target 0.3.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .. import _checks
from .._reduction import reduce_loss

__all__ = ["class_activation_map", "mask_guidance_loss", "resize_mask"]

KINDS = ("bce", "mse", "dice")


def _overlaps(src: int, dst: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[dst, src]`` overlap lengths of output cell ``i`` and input cell ``k``; rows sum to ``src``."""
    # In units of 1 / dst input cells, output cell i spans [i*src, (i+1)*src) and input cell
    # k spans [k*dst, (k+1)*dst): integer overlaps, exact for any pair of sizes.
    out_lo = torch.arange(dst, device=device)[:, None] * src
    in_lo = torch.arange(src, device=device)[None, :] * dst
    overlap = torch.minimum(out_lo + src, in_lo + dst) - torch.maximum(out_lo, in_lo)
    return overlap.clamp(min=0).to(dtype)


def _area_resize(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a validated ``[B, 1, h, w]`` mask to ``size`` by area (internal, no checks).

    Returns float32 (float64 for a float64 mask), outside autocast.
    """
    dtype = torch.float64 if mask.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=mask.device.type, enabled=False):
        values = mask.to(dtype)
        height, width = values.shape[-2:]
        if (height, width) == tuple(size):
            return values
        rows = _overlaps(height, size[0], values.device, dtype)
        cols = _overlaps(width, size[1], values.device, dtype)
        # Integer weights and one division: a full mask gives exactly 1, an empty one 0.
        return rows @ values @ cols.T / (height * width)


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
    return _area_resize(mask, (size[0], size[1]))


def check_guidance_args(kind: str, from_logits: bool, smooth: float, reduction: str) -> float:
    """Validate the hyper-parameters of the guidance loss; return ``smooth`` as a float."""
    _checks.check_choice(kind, "kind", KINDS)
    _checks.check_bool(from_logits, "from_logits")
    _checks.check_reduction(reduction)
    return _checks.check_float(smooth, "smooth", low=0.0, low_inclusive=False)


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

    BCE on logits uses ``binary_cross_entropy_with_logits`` and is exact for any
    logit; on probabilities, :func:`torch.nn.functional.binary_cross_entropy`
    clamps the logarithms at -100, so a saturated wrong map (a = 1 where m = 0)
    gets almost no gradient: prefer the logits (``MaskGuidedAttention.last_logits``).
    Everything is computed in float32 (float64 for float64 input), also under
    autocast.

    Args:
        attention: ``[B, 1, H, W]`` or ``[B, H, W]`` map: probabilities in [0, 1],
            or logits with ``from_logits=True``.
        mask: ``[B, 1, h, w]`` or ``[B, h, w]`` lesion mask in [0, 1] (bool,
            integer or floating), of any resolution.
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
    smooth = check_guidance_args(kind, from_logits, smooth, reduction)
    _checks.check_floating_tensor(attention, "attention")
    attention = _checks.check_spatial_mask(attention, "attention", unit_interval=not from_logits)
    mask = _checks.check_spatial_mask(mask, "mask")
    _checks.check_same_batch(attention, "attention", mask, "mask")
    if valid is not None:
        batch = attention.shape[0]
        valid = _checks.check_bool_mask(valid, "valid", (batch,), "[B]").to(attention.device)
    mask = mask.to(attention.device)

    dtype = torch.float64 if attention.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=attention.device.type, enabled=False):
        x = attention.to(dtype)
        target = _area_resize(mask, (x.shape[-2], x.shape[-1])).to(dtype)
        if kind == "bce":
            pixel = (
                F.binary_cross_entropy_with_logits(x, target, reduction="none")
                if from_logits
                else F.binary_cross_entropy(x, target, reduction="none")
            )
            loss = pixel.mean(dim=(1, 2, 3))
        else:
            prob = torch.sigmoid(x) if from_logits else x
            if kind == "mse":
                loss = (prob - target).square().mean(dim=(1, 2, 3))
            else:
                overlap = (prob * target).sum(dim=(1, 2, 3))
                total = prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
                loss = 1 - (2 * overlap + smooth) / (total + smooth)
    if valid is None:
        return reduce_loss(loss, reduction)
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return reduce_loss(loss, reduction, valid.sum())


def class_activation_map(
    features: torch.Tensor,
    fc_weight: torch.Tensor,
    target: torch.Tensor,
    *,
    fc_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Differentiable class activation map of a classifier with global average pooling.

    For a classifier :math:`y = W \, \mathrm{GAP}(f) + c`, the CAM of class
    :math:`t_b` is its logit before the spatial average:

    .. math::
        M_b(i, j) = \sum_{k} W_{t_b k} \, f_{b k i j} + c_{t_b},
        \qquad y_{b t_b} = \frac{1}{HW} \sum_{ij} M_b(i, j) .

    With ``fc_bias`` every cell of :math:`M_b` is the logit the classifier would
    give an image made of that cell alone, so it can be guided toward the lesion
    mask with ``mask_guidance_loss(cam, mask, from_logits=True)``; that is the
    extra supervision of GAIN without an attention module. Gradients flow to both
    the features and the classifier weights.

    Args:
        features: ``[B, C, H, W]`` the feature map that the classifier pools.
        fc_weight: ``[K, C]`` the classifier's weight (``nn.Linear(C, K).weight``).
        target: ``[B]`` integer class whose map to compute (e.g. the label).
        fc_bias: ``[K]`` the classifier's bias, or ``None`` to leave it out
            (the CAM of Zhou et al.).

    Returns:
        ``[B, 1, H, W]`` in the promoted dtype of ``features`` and ``fc_weight``.

    Raises:
        TypeError: Non-tensor inputs, non-floating features/weights/bias, float targets.
        ValueError: Bad shapes, channel mismatch, targets outside ``[0, K)``,
            NaN/Inf features.

    References:
        Zhou et al., "Learning Deep Features for Discriminative Localization",
        CVPR 2016. Li et al., "Tell Me Where to Look: Guided Attention Inference
        Network", CVPR 2018.

    Examples:
        >>> import torch
        >>> from contrast_attn.functional import class_activation_map
        >>> features = torch.randn(2, 8, 7, 7)
        >>> fc = torch.nn.Linear(8, 3)
        >>> cam = class_activation_map(features, fc.weight, torch.tensor([0, 2]), fc_bias=fc.bias)
        >>> cam.shape
        torch.Size([2, 1, 7, 7])
        >>> torch.allclose(cam.mean(dim=(1, 2, 3)), fc(features.mean(dim=(2, 3)))[[0, 1], [0, 2]])
        True
    """
    _checks.check_feature_map(features, "features")
    _checks.check_floating_tensor(fc_weight, "fc_weight")
    _checks.check_ndim(fc_weight, "fc_weight", (2,), "[K, C]")
    if fc_weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"fc_weight must have shape [K, C] with C = {features.shape[1]} (the features' "
            f"channels), got shape {tuple(fc_weight.shape)}"
        )
    num_classes = fc_weight.shape[0]
    if fc_bias is not None:
        _checks.check_floating_tensor(fc_bias, "fc_bias")
        if tuple(fc_bias.shape) != (num_classes,):
            raise ValueError(
                f"fc_bias must have shape [K] = [{num_classes}], got shape {tuple(fc_bias.shape)}"
            )
    target = _checks.check_labels(target, "target", features.shape[0])
    # int32/uint8 class indices are valid; indexing wants int64 (uint8 would act as a mask).
    target = target.to(device=features.device, dtype=torch.long)
    if not torch.compiler.is_compiling() and target.numel() > 0:
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"target must hold class indices in [0, {num_classes}), got values in "
                f"[{low}, {high}]"
            )
    _checks.check_finite(features, "features")
    dtype = torch.promote_types(features.dtype, fc_weight.dtype)
    cam = torch.einsum("bchw,bc->bhw", features.to(dtype), fc_weight[target].to(dtype))[:, None]
    if fc_bias is None:
        return cam
    return cam + fc_bias[target].to(dtype)[:, None, None, None]
