r"""Deferred re-weighting (DRW) of Cao et al. (NeurIPS 2019): class weights per epoch.

Re-weighting from the first epoch harms the features a network learns; DRW trains
without weights first and switches to class-balanced weights for the last epochs
(typically together with the learning-rate decay), once the features are learnt.
"""

from __future__ import annotations

import torch

from .. import _checks
from .class_balanced import Counts, class_balanced_weights

__all__ = ["deferred_reweighting_weights"]


def deferred_reweighting_weights(
    counts: Counts,
    epoch: int,
    *,
    defer_epoch: int,
    beta: float = 0.9999,
    zero_count: str = "error",
) -> torch.Tensor:
    r"""Class weights of the deferred re-weighting schedule for one epoch.

    .. math::
        w_c(t) = \begin{cases}
            1 & t < T_0 \\
            \dfrac{C\,(1-\beta)/(1-\beta^{n_c})}{\sum_k (1-\beta)/(1-\beta^{n_k})}
              & t \ge T_0
        \end{cases}

    for the (0-based) epoch :math:`t` and the deferral epoch :math:`T_0`: no
    re-weighting (all weights 1) before it, the class-balanced weights of Cui et al.
    (:func:`class_balanced_weights`, summing to :math:`C`) from it on, exactly the
    authors' ``train_rule == 'DRW'`` (``betas = [0, 0.9999]``, ``idx = epoch //
    160`` for 200 epochs). Pass the result as ``weight`` to :func:`ldam_loss`
    (LDAM-DRW), :func:`logit_adjusted_loss`, :func:`balanced_softmax_loss`, or as
    ``F.cross_entropy(..., weight=w.to(logits.dtype))`` (CE-DRW); all of them then
    take the mean as :math:`\sum_i w_{y_i} \ell_i / \sum_i w_{y_i}`. Weights of 1
    give exactly the unweighted loss.

    Args:
        counts: ``[C]`` training samples per class.
        epoch: The current epoch :math:`t \ge 0`, counted from 0.
        defer_epoch: :math:`T_0 \ge 0`, the first re-weighted epoch (0 re-weights
            from the start; the paper uses 160 of 200 epochs on CIFAR).
        beta: :math:`\beta \in [0, 1)` of the class-balanced weights after
            :math:`T_0` (paper: 0.9999).
        zero_count: ``"error"``, ``"as_one"`` or ``"zero_weight"`` for a class
            without samples (see :func:`class_balanced_weights`); checked in every
            epoch, also before :math:`T_0`.

    Returns:
        ``[C]`` float64 weights on the device of ``counts``.

    Raises:
        TypeError: ``counts`` of a wrong kind; ``epoch`` or ``defer_epoch`` not an int.
        ValueError: Bad counts or ``beta``; a negative ``epoch`` or ``defer_epoch``;
            a zero count with ``zero_count="error"``.

    References:
        Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware
        Margin Loss", NeurIPS 2019 (arXiv:1906.07413), Section 3.2 and
        Algorithm 1; code https://github.com/kaidic/LDAM-DRW (``cifar_train.py``).

    Examples:
        >>> from contrast_attn.functional import deferred_reweighting_weights
        >>> counts = [900, 90, 10]
        >>> deferred_reweighting_weights(counts, 3, defer_epoch=160)
        tensor([1., 1., 1.], dtype=torch.float64)
        >>> deferred_reweighting_weights(counts, 160, defer_epoch=160, beta=0.999)
        tensor([0.0444, 0.3063, 2.6493], dtype=torch.float64)
    """
    _checks.check_int(epoch, "epoch", low=0)
    _checks.check_int(defer_epoch, "defer_epoch", low=0)
    weights = class_balanced_weights(counts, beta, zero_count=zero_count)
    if epoch < defer_epoch:
        return torch.ones_like(weights)
    return weights
