r"""The classification loss against the class imbalance: the ``imbalance`` setting.

With training counts :math:`n_c` and prior :math:`\pi_c = n_c / \sum_k n_k`:

- ``"ce"``: plain cross-entropy;
- ``"cb"``: the class-balanced loss of Cui et al. (:class:`~contrast_attn.ClassBalancedLoss`,
  ``cb_beta``, ``cb_loss_type``), the paper's choice;
- ``"logit_adjusted"``: the logit-adjusted loss of Menon et al.
  (:class:`~contrast_attn.LogitAdjustedLoss`), softmax over :math:`x_c + \tau \log \pi_c`
  with :math:`\tau` = ``logit_adjust_tau``;
- ``"balanced_softmax"``: the balanced softmax of Ren et al.
  (:class:`~contrast_attn.BalancedSoftmaxLoss`), the same loss at :math:`\tau = 1`;
- ``"ldam_drw"``: the LDAM loss of Cao et al. (:class:`~contrast_attn.LDAMLoss`), margin
  :math:`\Delta_c \propto n_c^{-1/4}` up to ``ldam_max_margin`` for the rarest class,
  with deferred re-weighting: unweighted before epoch ``drw_epoch`` (0-based; by default
  ``round(0.8 * epochs)``, the paper's 160 of 200), the class-balanced weights of
  ``cb_beta`` from it on. The example's classifier is a plain linear layer, so the
  margin is in logits (scale :math:`s = 1`); the paper's :math:`s = 30` and margin 0.5
  are sized for cosine logits in :math:`[-1, 1]`.

Every method predicts with the plain :math:`\arg\max_c x_c`; the evaluation also shows
what the post-hoc correction :math:`\arg\max_c x_c - \tau \log \pi_c` would change.
"""

from __future__ import annotations

import torch
from torch import nn

from contrast_attn import (
    BalancedSoftmaxLoss,
    ClassBalancedLoss,
    LDAMLoss,
    LogitAdjustedLoss,
)
from contrast_attn.functional import deferred_reweighting_weights

from .config import Config

__all__ = ["ImbalanceLoss"]


def _loss(cfg: Config, counts: torch.Tensor) -> nn.Module:
    """The library loss of ``cfg.imbalance`` for training ``counts``."""
    if cfg.imbalance == "ce":
        return nn.CrossEntropyLoss()
    if cfg.imbalance == "cb":
        return ClassBalancedLoss(
            counts, beta=cfg.cb_beta, loss_type=cfg.cb_loss_type, zero_count="as_one"
        )
    if cfg.imbalance == "logit_adjusted":
        return LogitAdjustedLoss(counts, tau=cfg.logit_adjust_tau, zero_count="as_one")
    if cfg.imbalance == "balanced_softmax":
        return BalancedSoftmaxLoss(counts, zero_count="as_one")
    return LDAMLoss(counts, max_margin=cfg.ldam_max_margin, scale=1.0, zero_count="as_one")


class ImbalanceLoss(nn.Module):
    """The classification loss of ``cfg.imbalance``, with the LDAM-DRW epoch schedule.

    Args:
        cfg: the configuration (``imbalance`` and the settings of the chosen loss).
        class_counts: training images per class.

    Shape:
        ``loss(logits [B, K], target [B])`` returns a scalar.

    Examples:
        >>> from examples.deep_pneumonia.config import Config
        >>> loss = ImbalanceLoss(Config(imbalance="ldam_drw", epochs=10), [252, 105, 42, 21])
        >>> loss.set_epoch(8)
        >>> loss.weight.tolist() == [1.0] * 4
        False
    """

    weight: torch.Tensor

    def __init__(self, cfg: Config, class_counts: list[int]) -> None:
        super().__init__()
        counts = torch.tensor(class_counts)
        self.loss = _loss(cfg, counts)
        self.defer_epoch = cfg.drw_start() if cfg.imbalance == "ldam_drw" else None
        self.beta = cfg.cb_beta
        # Not saved: a function of the epoch, set by ``set_epoch`` (also on resume).
        self.register_buffer(
            "weight", torch.ones(len(class_counts), dtype=torch.float64), persistent=False
        )

    def set_epoch(self, epoch: int) -> None:
        """Use the class weights of ``epoch`` (0-based; only LDAM-DRW has any)."""
        if self.defer_epoch is None:
            return
        counts = self.loss.counts
        weights = deferred_reweighting_weights(
            counts, epoch, defer_epoch=self.defer_epoch, beta=self.beta, zero_count="as_one"
        )
        self.weight.copy_(weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.defer_epoch is None:
            loss: torch.Tensor = self.loss(logits, target)
        else:
            loss = self.loss(logits, target, weight=self.weight)
        return loss
