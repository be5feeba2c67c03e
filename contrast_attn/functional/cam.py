r"""The class activation map of a classifier, differentiable, to be guided by masks."""

from __future__ import annotations

import torch

from .. import _checks

__all__ = ["class_activation_map"]


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
    the features and the classifier weights. A volume ``[B, C, D, H, W]`` gives
    the map :math:`M_b(i, j, k)` of its voxels, ``[B, 1, D, H, W]``.

    Args:
        features: ``[B, C, H, W]`` the feature map that the classifier pools
            (``[B, C, D, H, W]`` for a volume).
        fc_weight: ``[K, C]`` the classifier's weight (``nn.Linear(C, K).weight``).
        target: ``[B]`` integer class whose map to compute (e.g. the label).
        fc_bias: ``[K]`` the classifier's bias, or ``None`` to leave it out
            (the CAM of Zhou et al.).

    Returns:
        ``[B, 1, H, W]`` (``[B, 1, D, H, W]``) in the promoted dtype of
        ``features`` and ``fc_weight``.

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
    checks = _checks.ValueChecks()
    checks.indices(target, "target", num_classes)
    checks.values(features, "features")
    checks.values(fc_weight, "fc_weight")
    if fc_bias is not None:
        checks.values(fc_bias, "fc_bias")
    checks.run()
    dtype = torch.promote_types(features.dtype, fc_weight.dtype)
    cam = torch.einsum("bc...,bc->b...", features.to(dtype), fc_weight[target].to(dtype))[:, None]
    if fc_bias is None:
        return cam
    return cam + fc_bias[target].to(dtype).reshape((-1,) + (1,) * (cam.ndim - 1))
