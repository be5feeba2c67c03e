r"""Mask-guided spatial attention with hard gating and teacher forcing."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import _checks
from .._resize import area_resize

__all__ = ["MaskGuidedAttention"]

MODES = ("soft", "hard")


class MaskGuidedAttention(nn.Module):
    r"""Predict a spatial attention map from a feature map and re-weight the features.

    A small convolutional scorer (``k×k`` conv → BatchNorm → ReLU → ``1×1`` conv)
    gives logits :math:`x` and the attention :math:`a = \sigma(x) \in [0, 1]^{H \times W}`
    (:math:`[0, 1]^{D \times H \times W}` with ``spatial_dims=3``: ``k×k×k``
    convolutions over a volume, for CT and MRI).
    The features are gated by :math:`g`:

    .. math::
        \tilde f = f \odot (1 + g) \ \ (\text{residual}), \qquad \tilde f = f \odot g \ \ (\text{otherwise}),

    where :math:`g = a` (``mode="soft"``) or, for hard attention,
    :math:`g = \mathbb{1}[a \ge \theta]` in the forward pass with the
    straight-through gradient :math:`\partial g / \partial a = 1`
    (``mode="hard"``). The residual form keeps the features outside the lesion
    (the attention emphasises rather than deletes) and is the default. With
    ``gate_gradient=False`` the gate is :math:`\operatorname{sg}(g)` (stop-gradient):
    the classification loss no longer reaches the scorer through the gated features,
    so the scorer is trained by the guidance loss alone (the features still get the
    gradient :math:`g \, \partial L / \partial \tilde f`).

    Teacher forcing: in training mode, when a lesion ``mask`` is passed, each
    annotated image (``valid``) is gated by its ground-truth mask, resized to the
    feature map by area, with probability ``teacher_forcing`` (drawn per image
    from torch's global RNG). The predicted map is still returned, so it can be
    guided toward the mask by :func:`~contrast_attn.functional.mask_guidance_loss`.
    In evaluation mode the mask is ignored.

    The returned ``attention`` is the predicted soft map (never binarised or
    forced). Its logits of the last call are kept in :attr:`last_logits`; the
    guidance loss on logits (``from_logits=True``) is exact where the
    probabilities saturate.

    Args:
        in_channels: Channels :math:`C` of the feature map.
        spatial_dims: 2 for images ``[B, C, H, W]`` (the default), 3 for
            volumes ``[B, C, D, H, W]`` (MONAI's argument name).
        mode: ``"soft"`` or ``"hard"``.
        threshold: :math:`\theta \in (0, 1)`, the binarisation threshold of hard mode.
        residual: Gate as :math:`f (1 + g)` (True) or :math:`f g` (False).
        gate_gradient: Whether the gradient of the gated features reaches the
            scorer (True; straight-through in hard mode). False detaches the gate,
            so only a loss on the returned map (the guidance) trains the scorer:
            with a hard, non-residual gate and a short run, the classification
            gradient can otherwise keep the map from ever learning the lesion.
        teacher_forcing: Probability in [0, 1] of gating an annotated training
            image with its ground-truth mask.
        hidden_channels: Width of the scorer; ``None`` = ``max(in_channels // 8, 8)``.
        kernel_size: Odd size of the scorer's first convolution (spatial context).
        initial_attention: Value in (0, 1) the map starts near: the scorer's output
            bias is set to its log-odds (the prior initialisation of Lin et al.'s
            focal loss). ``None`` keeps the default bias, a map near 0.5. A lesion
            covers a few per cent of an image; starting there saves a short run
            from spending its steps lowering the background (with a hard,
            non-residual gate a start near 0.5 can delete most features).

    Shape:
        ``forward(features [B, C, H, W], mask=None, valid=None)`` with ``mask``
        ``[B, 1, h, w]`` or ``[B, h, w]`` in [0, 1] of any resolution and ``valid``
        ``[B]`` bool; returns ``(attended [B, C, H, W], attention [B, 1, H, W])``.
        With ``spatial_dims=3``: ``features [B, C, D, H, W]``, ``mask
        [B, 1, d, h, w]`` or ``[B, d, h, w]``, ``attention [B, 1, D, H, W]``.

    Raises:
        TypeError: Bad argument types at construction (``residual`` or
            ``gate_gradient`` not a bool, non-int sizes); in the call, non-tensor or
            non-floating ``features``.
        ValueError: ``mode`` unknown, ``threshold`` or ``initial_attention`` outside (0, 1),
            ``teacher_forcing`` outside [0, 1], non-positive sizes, an even
            ``kernel_size`` or ``spatial_dims`` not 2 or 3; in the call, ``features``
            not ``[B, in_channels, H, W]`` (``[B, in_channels, D, H, W]``), a mask
            of another layout or outside [0, 1], a batch mismatch, ``valid`` not
            ``[B]`` 0/1 or given without a mask, ``features`` on another device than
            the layer, or (in training, before BatchNorm updates its running
            statistics) non-finite ``features``.

    Attributes:
        last_logits: ``[B, 1, H, W]`` (``[B, 1, D, H, W]``) attention logits of
            the last forward call (with their graph), or ``None`` before the first call.

    References:
        Wei et al., "Deep Pneumonia: Attention-Based Contrastive Learning for
        Class-Imbalanced Pneumonia Lesion Recognition in Chest X-rays", 2022.
        Wang et al., "Residual Attention Network for Image Classification", CVPR
        2017 (the residual gate). Bengio et al., "Estimating or Propagating
        Gradients Through Stochastic Neurons", 2013 (straight-through estimator).

    Examples:
        >>> import torch
        >>> from contrast_attn import MaskGuidedAttention
        >>> from contrast_attn.functional import mask_guidance_loss
        >>> attn = MaskGuidedAttention(64, mode="hard", teacher_forcing=0.5)
        >>> features = torch.randn(4, 64, 7, 7)
        >>> mask = torch.zeros(4, 1, 224, 224)
        >>> mask[:, :, 64:160, 64:160] = 1
        >>> attended, attention = attn(features, mask)
        >>> attended.shape, attention.shape
        (torch.Size([4, 64, 7, 7]), torch.Size([4, 1, 7, 7]))
        >>> loss = mask_guidance_loss(attn.last_logits, mask, from_logits=True)
        >>> loss.backward()
        >>> volume_attn = MaskGuidedAttention(32, spatial_dims=3)       # CT, MRI
        >>> _, attention = volume_attn(torch.randn(2, 32, 4, 8, 8))
        >>> attention.shape
        torch.Size([2, 1, 4, 8, 8])
    """

    last_logits: torch.Tensor | None

    def __init__(
        self,
        in_channels: int,
        *,
        spatial_dims: int = 2,
        mode: str = "soft",
        threshold: float = 0.5,
        residual: bool = True,
        gate_gradient: bool = True,
        teacher_forcing: float = 0.0,
        hidden_channels: int | None = None,
        kernel_size: int = 3,
        initial_attention: float | None = None,
    ) -> None:
        super().__init__()
        _checks.check_int(in_channels, "in_channels", low=1)
        _checks.check_spatial_dims(spatial_dims)
        _checks.check_choice(mode, "mode", MODES)
        self.threshold = _checks.check_float(
            threshold, "threshold", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False
        )
        _checks.check_bool(residual, "residual")
        _checks.check_bool(gate_gradient, "gate_gradient")
        self.teacher_forcing = _checks.check_float(
            teacher_forcing, "teacher_forcing", low=0.0, high=1.0
        )
        hidden = max(in_channels // 8, 8) if hidden_channels is None else hidden_channels
        _checks.check_int(hidden, "hidden_channels", low=1)
        _checks.check_int(kernel_size, "kernel_size", low=1)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-size output), got {kernel_size}")
        prior = (
            None
            if initial_attention is None
            else _checks.check_float(
                initial_attention,
                "initial_attention",
                low=0.0,
                high=1.0,
                low_inclusive=False,
                high_inclusive=False,
            )
        )
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.mode = mode
        self.residual = residual
        self.gate_gradient = gate_gradient
        conv, norm = (
            (nn.Conv2d, nn.BatchNorm2d) if spatial_dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        )
        context = conv(in_channels, hidden, kernel_size, padding=kernel_size // 2, bias=False)
        output = conv(hidden, 1, 1)
        if prior is not None and output.bias is not None:
            nn.init.constant_(output.bias, math.log(prior / (1.0 - prior)))
        self.scorer = nn.Sequential(context, norm(hidden), nn.ReLU(inplace=True), output)
        self.last_logits = None

    def forward(
        self,
        features: torch.Tensor,
        mask: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _checks.check_feature_map(features, "features", self.in_channels, self.spatial_dims)
        _checks.check_device(features, "features", next(self.parameters()).device, "the layer")
        batch = features.shape[0]
        checks = _checks.ValueChecks()
        if self.training:
            # Before BatchNorm sees them: a NaN would poison its running statistics for good.
            checks.values(features, "features")
        if mask is not None:
            mask = _checks.check_spatial_mask(
                mask, "mask", spatial_dims=self.spatial_dims, checks=checks
            )
            _checks.check_same_batch(features, "features", mask, "mask")
        if valid is not None:
            if mask is None:
                raise ValueError("valid was given without a mask; pass the lesion mask too")
            valid = _checks.check_bool_mask(valid, "valid", (batch,), "[B]", checks)
            valid = valid.to(features.device)
        checks.run()

        logits = self.scorer(features)
        attention = torch.sigmoid(logits)
        gate = attention
        if self.mode == "hard":
            hard = (attention >= self.threshold).to(attention.dtype)
            gate = attention + (hard - attention).detach()
        if not self.gate_gradient:
            gate = gate.detach()
        if self.training and mask is not None and self.teacher_forcing > 0:
            forced = torch.rand(batch, device=features.device) < self.teacher_forcing
            if valid is not None:
                forced &= valid
            target = area_resize(mask.to(features.device), gate.shape[2:])
            per_image = forced.reshape((-1,) + (1,) * (gate.ndim - 1))
            gate = torch.where(per_image, target.to(gate.dtype), gate)
        self.last_logits = logits
        attended = features * (1 + gate) if self.residual else features * gate
        return attended, attention

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, spatial_dims={self.spatial_dims}, "
            f"mode={self.mode!r}, threshold={self.threshold}, "
            f"residual={self.residual}, gate_gradient={self.gate_gradient}, "
            f"teacher_forcing={self.teacher_forcing}"
        )
