"""The network: a torchvision ResNet trunk, mask-guided attention, a classifier and two heads.

``Backbone`` is a torchvision ResNet with a one-channel stem and no classifier,
randomly initialised (a user checkpoint may be loaded). Pre-training puts a
:class:`~contrast_attn.ProjectionHead` on its pooled output (:class:`PretrainNet`);
fine-tuning (:class:`DeepPneumoniaNet`) puts the attention it is given (a
:class:`~contrast_attn.MaskGuidedAttention`) after stage ``feature_stage``, then the remaining stages, global average pooling
and a linear classifier. The stage's feature map also feeds the contrastive
feature regulariser, whose projection head lives in the loss module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from contrast_attn import MaskGuidedAttention, ProjectionHead

__all__ = ["ARCHITECTURES", "Backbone", "DeepPneumoniaNet", "NetOutput", "PretrainNet"]

# Name -> (block, blocks per stage). "resnet10" is ResNet-18 with one block per stage.
ARCHITECTURES: dict[str, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    "resnet10": (BasicBlock, [1, 1, 1, 1]),
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


def _stage(
    block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, blocks: int, stride: int
) -> nn.Sequential:
    """One ResNet stage, as ``torchvision.models.ResNet._make_layer`` builds it."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            conv1x1(inplanes, planes * block.expansion, stride),
            nn.BatchNorm2d(planes * block.expansion),
        )
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class Backbone(nn.Module):
    """A torchvision ResNet trunk with a one-channel stem, returning its stage outputs.

    The blocks are torchvision's and the initialisation is ``torchvision.models.ResNet``'s;
    with ``width=64`` the trunk is exactly torchvision's ResNet (its weights load with
    :meth:`load_torchvision`); a smaller ``width`` scales every stage's channels, for
    CPU-sized runs.

    Args:
        arch: a key of :data:`ARCHITECTURES`.
        width: channels of the first stage (64 in torchvision); stage i has ``width * 2**i``.
        checkpoint: optional path of a ``state_dict`` for this trunk (or for a
            torchvision ResNet with a one-channel ``conv1``; its ``fc`` is ignored).
    """

    def __init__(
        self, arch: str = "resnet18", width: int = 64, checkpoint: str | Path | None = None
    ) -> None:
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        block, layers = ARCHITECTURES[arch]
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        planes = [width * 2**i for i in range(4)]
        inplanes = [width] + [p * block.expansion for p in planes[:-1]]
        self.stages = nn.ModuleList(
            _stage(block, inplanes[i], planes[i], layers[i], 1 if i == 0 else 2) for i in range(4)
        )
        self.channels = [p * block.expansion for p in planes]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if checkpoint is not None:
            self.load_torchvision(checkpoint)

    def load_torchvision(self, path: str | Path) -> None:
        """Load a trunk ``state_dict`` saved from this class or a 1-channel torchvision ResNet."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        renames = {"conv1.": "stem.0.", "bn1.": "stem.1."}
        renames.update({f"layer{i + 1}.": f"stages.{i}." for i in range(4)})
        converted: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if key.startswith("fc."):
                continue
            for old, new in renames.items():
                if key.startswith(old):
                    key = new + key[len(old) :]
                    break
            converted[key] = value
        self.load_state_dict(converted)

    def forward_from(self, x: torch.Tensor, start: int, stop: int = 4) -> torch.Tensor:
        """Run stages ``start`` to ``stop - 1`` (0-based) on ``x``; stage 0 includes the stem."""
        if start == 0:
            x = self.stem(x)
        for stage in self.stages[start:stop]:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled features ``[B, C]`` of ``x`` ``[B, 1, S, S]``."""
        return self.forward_from(x, 0).mean(dim=(2, 3))


class PretrainNet(nn.Module):
    """Backbone plus a SimCLR projection head, for NT-Xent pre-training."""

    def __init__(self, backbone: Backbone, ssl_dim: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        width = backbone.channels[-1]
        self.head = ProjectionHead(width, width, ssl_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections ``[B, ssl_dim]`` of images ``[B, 1, S, S]``."""
        out: torch.Tensor = self.head(self.backbone(x))
        return out


@dataclass
class NetOutput:
    """What one forward pass of :class:`DeepPneumoniaNet` returns.

    Attributes:
        logits: ``[B, K]`` class scores.
        features: ``[B, C, H, W]`` the feature map of stage ``feature_stage`` (before attention).
        final: ``[B, C', H', W']`` the last stage's feature map (the classifier pools it).
        attention: ``[B, 1, H, W]`` the predicted attention map, or ``None`` without attention.
        attention_logits: its logits (for the guidance loss), or ``None``.
    """

    logits: torch.Tensor
    features: torch.Tensor
    final: torch.Tensor
    attention: torch.Tensor | None
    attention_logits: torch.Tensor | None


class DeepPneumoniaNet(nn.Module):
    """The classifier: backbone, optional attention after a stage, linear head.

    Args:
        backbone: the trunk (pre-trained or not).
        num_classes: number of classes K.
        attention: the attention applied to the output of ``feature_stage`` (its
            ``in_channels`` are that stage's channels), or ``None``.
        feature_stage: 1-based stage (2, 3 or 4) whose output is attended and regularised.

    Raises:
        ValueError: on a ``feature_stage`` outside 2-4 or an attention whose
            ``in_channels`` differ from the stage's channels.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        attention: MaskGuidedAttention | None = None,
        *,
        feature_stage: int = 2,
    ) -> None:
        super().__init__()
        if feature_stage not in (2, 3, 4):
            raise ValueError(f"feature_stage must be 2, 3 or 4, got {feature_stage}")
        self.backbone = backbone
        self.feature_stage = feature_stage
        self.feature_channels = backbone.channels[feature_stage - 1]
        if attention is not None and attention.in_channels != self.feature_channels:
            raise ValueError(
                f"attention.in_channels must be {self.feature_channels} (stage {feature_stage}"
                f" of the backbone), got {attention.in_channels}"
            )
        self.attention = attention
        self.classifier = nn.Linear(backbone.channels[-1], num_classes)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> NetOutput:
        """Classify images ``[B, 1, S, S]``; ``mask``/``valid`` enable teacher forcing."""
        features = self.backbone.forward_from(x, 0, self.feature_stage)
        attended, attention, attention_logits = features, None, None
        if self.attention is not None:
            attended, attention = self.attention(
                features, mask, valid if mask is not None else None
            )
            attention_logits = self.attention.last_logits
        final = self.backbone.forward_from(attended, self.feature_stage)
        logits = self.classifier(final.mean(dim=(2, 3)))
        return NetOutput(logits, features, final, attention, attention_logits)
