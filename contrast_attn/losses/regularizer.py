"""The contrastive feature regulariser as an ``nn.Module`` with its projection head."""

from __future__ import annotations

import torch

from .. import _checks
from .._config import ConfiguredModule
from ..functional.regularizer import RegularizerConfig, RegularizerRefs, regularize
from ..layers.heads import ProjectionHead
from ..memory import MemoryQueue

__all__ = ["ContrastiveFeatureRegularizer"]


class ContrastiveFeatureRegularizer(ConfiguredModule):
    r"""Contrastive term pulling lesion features together, away from the background.

    See :func:`contrast_attn.functional.contrastive_feature_regularizer` for the
    objective and the choices behind it: lesion and background features are
    pooled per image, projected by this module's :class:`~contrast_attn.ProjectionHead`,
    L2-normalised, and contrasted with SupCon, lesion embeddings of one class
    being positives and background embeddings negatives only:

    .. math::
        \ell_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)} \log \frac{e^{z_i \cdot z_p / \tau}}
            {\sum_{k \in L \setminus \{i\}} e^{z_i \cdot z_k / \tau} + \sum_{j \in N} e^{z_i \cdot n_j / \tau}} .

    The hyper-parameters are held in :attr:`config`, a
    :class:`~contrast_attn.functional.regularizer.RegularizerConfig`.
    After each call :attr:`last_num_anchors` holds the number of lesion anchors
    that had a positive (a 0-d long tensor; this rank's own anchors under
    ``gather``): 0 means the term was 0 for want of lesions.

    Args:
        in_channels: Channels :math:`C` of the feature map.
        projection_dim: Output size of the projection head.
        hidden_dim: Hidden width of the head; ``None`` = ``in_channels``.
        temperature: :math:`\tau > 0`.
        variant: ``"out"`` or ``"in"``.
        min_area: A region takes part when it covers more than this fraction of the map.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        gather: All-gather the embeddings across ``torch.distributed`` ranks (with
            gradients): each rank's lesion anchors meet the keys of every rank, and
            the mean of the ranks' losses is the loss of the whole batch (the head's
            batch normalisation keeps per-rank statistics).
        chunk_size: Rows per tile of the memory-bounded kernel (``None`` = automatic).
        memory: A :class:`~contrast_attn.MemoryQueue` built with ``kinds=True`` (and
            ``dim=projection_dim``): each call contrasts with its contents (reference
            lesion and background embeddings with their classes) and then enqueues
            the call's embeddings (gathered when ``gather=True``).

    Shape:
        ``reg(features [B, C, H, W], mask [B, 1, h, w] or [B, h, w], labels=None [B],
        valid=None [B])`` → scalar (``[B]`` for ``reduction="none"``); a volume
        ``features [B, C, D, H, W]`` with ``mask [B, 1, d, h, w]`` or ``[B, d, h, w]`` alike.

    Raises:
        TypeError: Non-int ``in_channels``; in the call, as
            :func:`~contrast_attn.functional.contrastive_feature_regularizer`.
        ValueError: Bad hyper-parameters; in the call, ``features`` not
            ``[B, in_channels, H, W]`` or ``[B, in_channels, D, H, W]`` and the errors of
            :func:`~contrast_attn.functional.contrastive_feature_regularizer`.

    References:
        Wei et al., "Deep Pneumonia", 2022 (arXiv:2207.11393). Khosla et al.,
        "Supervised Contrastive Learning", NeurIPS 2020.

    Examples:
        >>> import torch
        >>> from contrast_attn import ContrastiveFeatureRegularizer
        >>> reg = ContrastiveFeatureRegularizer(64, projection_dim=32)
        >>> features = torch.randn(4, 64, 7, 7, requires_grad=True)
        >>> mask = torch.zeros(4, 224, 224)
        >>> mask[:3, 64:160, 32:128] = 1
        >>> reg(features, mask, torch.tensor([1, 1, 1, 0])).backward()
        >>> int(reg.last_num_anchors)
        3
    """

    config: RegularizerConfig
    last_num_anchors: torch.Tensor | None

    def __init__(
        self,
        in_channels: int,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        *,
        temperature: float = 0.1,
        variant: str = "out",
        min_area: float = 0.0,
        reduction: str = "mean",
        gather: bool = False,
        chunk_size: int | None = None,
        memory: MemoryQueue | None = None,
    ) -> None:
        super().__init__()
        self.config = RegularizerConfig(
            temperature, variant, min_area, reduction, gather, chunk_size
        )
        _checks.check_int(in_channels, "in_channels", low=1)
        self.in_channels = in_channels
        self.projection = ProjectionHead(in_channels, hidden_dim, projection_dim)
        if memory is not None and (not isinstance(memory, MemoryQueue) or memory.kind is None):
            raise TypeError(
                f"memory must be a MemoryQueue built with kinds=True, or None, got {memory!r}"
            )
        self.memory = memory
        self.last_num_anchors = None

    def forward(
        self,
        features: torch.Tensor,
        mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _checks.check_feature_map(features, "features", self.in_channels)
        # The head's layers without its input checks: the pooled vectors come from
        # features that regularize() has checked (a second check would be a second sync).
        if self.memory is None:
            loss, self.last_num_anchors = regularize(
                self.config, features, mask, labels, valid=valid, projection=self.projection.layers
            )
            return loss
        keys, key_labels = self.memory.contents()
        refs = RegularizerRefs(keys, None if labels is None else key_labels, self.memory.kinds())
        new: list[torch.Tensor] = []
        loss, self.last_num_anchors = regularize(
            self.config,
            features,
            mask,
            labels,
            valid=valid,
            projection=self.projection.layers,
            refs=refs,
            on_keys=lambda *rows: new.extend(rows),
        )
        self.memory.enqueue(new[0], new[1], kind=new[2], gather=self.config.gather)
        return loss

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, {super().extra_repr()}"
