"""NT-Xent and SupCon as ``nn.Module`` losses (see :mod:`contrast_attn.functional`)."""

from __future__ import annotations

import torch

from .._config import ConfiguredModule
from ..functional.contrastive import NTXentConfig, SupConConfig, nt_xent, supcon
from ..memory import MemoryQueue

__all__ = ["NTXentLoss", "SupConLoss"]


class NTXentLoss(ConfiguredModule):
    """NT-Xent (SimCLR) loss; see :func:`contrast_attn.functional.nt_xent_loss`.

    .. math::
        \\ell_i = -\\frac{1}{V - 1} \\sum_{p \\in P(i)}
            \\log \\frac{\\exp(z_i \\cdot z_p / \\tau)}{\\sum_{k \\ne i} \\exp(z_i \\cdot z_k / \\tau)}

    The hyper-parameters are held in :attr:`config`, an
    :class:`~contrast_attn.functional.contrastive.NTXentConfig`, and read as
    attributes (``loss.temperature``).

    Args:
        temperature: :math:`\\tau > 0` (SimCLR's default 0.5).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        gather: All-gather across ``torch.distributed`` ranks with gradients.
        chunk_size: Rows per tile of the memory-bounded kernel (``None`` = automatic).
        hard_negative_beta: :math:`\\beta \\ge 0`, hard-negative importance weights.
        debias_tau_plus: :math:`\\tau^+ \\in [0, 1)`, debiased negatives.
        memory: A :class:`~contrast_attn.MemoryQueue`: each call contrasts with its
            contents (extra negatives, ``ref_features``) and then enqueues the
            call's embeddings (all views; gathered when ``gather=True``).

    Shape:
        Called as ``loss(z1, z2)`` with two ``[B, D]`` views or ``loss(views)`` with
        ``[B, V, D]``; returns a scalar (``[V * B]`` for ``reduction="none"``).

    Raises:
        TypeError: A hyper-parameter of the wrong type (at construction), or views
            that are not floating tensors (in the call).
        ValueError: ``temperature`` not positive, an unknown ``reduction``, a bad
            ``chunk_size`` (at construction); views of mismatched or empty shapes,
            NaN/Inf values, or (with ``gather``) ranks whose shapes or dtypes differ
            (in the call).

    References:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual
        Representations", ICML 2020.

    Examples:
        >>> import torch
        >>> from contrast_attn import NTXentLoss
        >>> criterion = NTXentLoss(temperature=0.5)
        >>> z1 = torch.randn(16, 128, requires_grad=True)
        >>> z2 = torch.randn(16, 128, requires_grad=True)
        >>> loss = criterion(z1, z2)
        >>> loss.backward()
    """

    config: NTXentConfig

    def __init__(
        self,
        temperature: float | torch.Tensor = 0.5,
        *,
        reduction: str = "mean",
        gather: bool = False,
        chunk_size: int | None = None,
        hard_negative_beta: float = 0.0,
        debias_tau_plus: float = 0.0,
        memory: MemoryQueue | None = None,
    ) -> None:
        super().__init__()
        self.config = NTXentConfig(
            temperature, reduction, gather, chunk_size, hard_negative_beta, debias_tau_plus
        )
        self.memory = _check_memory(memory)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor | None = None) -> torch.Tensor:
        if self.memory is None:
            return nt_xent(self.config, z1, z2)
        loss = nt_xent(self.config, z1, z2, self.memory.contents()[0])
        rows = z1.reshape(-1, z1.shape[-1]) if z2 is None else torch.cat([z1, z2])
        self.memory.enqueue(rows, gather=self.config.gather)
        return loss


class SupConLoss(ConfiguredModule):
    """Supervised contrastive loss; see :func:`contrast_attn.functional.supcon_loss`.

    .. math::
        \\ell_i^{out} = -\\frac{\\tau}{\\tau_b} \\frac{1}{|P(i)|} \\sum_{p \\in P(i)}
            \\log \\frac{\\exp(z_i \\cdot z_p / \\tau)}{\\sum_{k \\ne i} \\exp(z_i \\cdot z_k / \\tau)}

    After each call, :attr:`last_num_anchors_without_positives` holds the number
    of anchors that had no positive (a 0-d long tensor, not synchronised to the
    host until you read it).

    The hyper-parameters are held in :attr:`config`, a
    :class:`~contrast_attn.functional.contrastive.SupConConfig`, and read as
    attributes (``loss.temperature``).

    Args:
        temperature: :math:`\\tau > 0`.
        base_temperature: :math:`\\tau_b`, ``None`` = equal to ``temperature``.
        variant: ``"out"`` (default) or ``"in"``.
        no_positive: ``"ignore"``, ``"zero"`` or ``"error"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        gather: All-gather across ``torch.distributed`` ranks with gradients.
        chunk_size: Rows per tile of the memory-bounded kernel (``None`` = automatic).
        hard_negative_beta: :math:`\\beta \\ge 0`, hard-negative importance weights.
        debias_tau_plus: :math:`\\tau^+ \\in [0, 1)`, debiased negatives.
        memory: A :class:`~contrast_attn.MemoryQueue`: each call contrasts with its
            contents (``ref_features``, with their labels as ``ref_labels`` when
            ``labels`` are given) and then enqueues the call's embeddings (every
            view) with their labels (gathered when ``gather=True``).

    Shape:
        ``loss(features, labels=None, mask=None)`` with features ``[B, V, D]`` or
        ``[B, D]``, labels ``[B]``, mask ``[B, B]``.

    Raises:
        TypeError: A hyper-parameter of the wrong type (at construction); features,
            labels or mask of the wrong type (in the call).
        ValueError: ``temperature`` or ``base_temperature`` not positive, an unknown
            ``variant``, ``no_positive`` or ``reduction`` (at construction); shapes
            that do not match, both ``labels`` and ``mask``, a mask that is not 0/1,
            NaN/Inf values, or an anchor without a positive under
            ``no_positive="error"`` (in the call).

    References:
        Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020.

    Examples:
        >>> import torch
        >>> from contrast_attn import SupConLoss
        >>> criterion = SupConLoss(temperature=0.1)
        >>> features = torch.randn(6, 2, 32)
        >>> labels = torch.tensor([0, 0, 1, 1, 2, 3])
        >>> loss = criterion(features, labels)
        >>> int(criterion.last_num_anchors_without_positives)
        0
        >>> loss = criterion(features[:, :1], labels)  # classes 2 and 3 appear once
        >>> int(criterion.last_num_anchors_without_positives)
        2
    """

    config: SupConConfig
    last_num_anchors_without_positives: torch.Tensor | None

    def __init__(
        self,
        temperature: float | torch.Tensor = 0.1,
        *,
        base_temperature: float | None = None,
        variant: str = "out",
        no_positive: str = "ignore",
        reduction: str = "mean",
        gather: bool = False,
        chunk_size: int | None = None,
        hard_negative_beta: float = 0.0,
        debias_tau_plus: float = 0.0,
        memory: MemoryQueue | None = None,
    ) -> None:
        super().__init__()
        self.config = SupConConfig(
            temperature,
            base_temperature,
            variant,
            no_positive,
            reduction,
            gather,
            chunk_size,
            hard_negative_beta,
            debias_tau_plus,
        )
        self.memory = _check_memory(memory)
        self.last_num_anchors_without_positives = None

    def forward(
        self,
        features: torch.Tensor,
        labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.memory is None:
            loss, missing = supcon(self.config, features, labels, mask)
        else:
            keys, key_labels = self.memory.contents()
            ref_labels = None if labels is None else key_labels
            loss, missing = supcon(self.config, features, labels, mask, keys, ref_labels)
            views = features.shape[1] if features.ndim == 3 else 1
            self.memory.enqueue(
                features.reshape(-1, features.shape[-1]),
                None if labels is None else labels.repeat_interleave(views, dim=0),
                gather=self.config.gather,
            )
        self.last_num_anchors_without_positives = missing.detach()
        return loss


def _check_memory(memory: MemoryQueue | None) -> MemoryQueue | None:
    if memory is not None and not isinstance(memory, MemoryQueue):
        raise TypeError(f"memory must be a MemoryQueue or None, got {type(memory).__name__}")
    return memory
