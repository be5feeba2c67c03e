r"""The class-balanced loss as an ``nn.Module`` whose class counts are a buffer."""

from __future__ import annotations

import torch

from ..functional.class_balanced import (
    ClassBalancedConfig,
    Counts,
    class_balanced,
    class_balanced_weights,
)
from .counts import ClassCountsModule

__all__ = ["ClassBalancedLoss"]


class ClassBalancedLoss(ClassCountsModule):
    r"""Class-balanced loss; see :func:`contrast_attn.functional.class_balanced_loss`.

    .. math::
        \ell_i = w_{y_i} \, L(x_i, y_i), \qquad
        w_c \propto \frac{1 - \beta}{1 - \beta^{n_c}}, \quad \sum_c w_c = C,

    with :math:`L` the softmax cross-entropy, the summed sigmoid cross-entropy or
    the sigmoid focal loss. The per-class sample counts :math:`n_c` live in the
    ``counts`` buffer (long ``[C]``): they are saved in ``state_dict``, follow
    ``.to()``/``.cuda()``, and can be accumulated during training with
    :meth:`update`. The hyper-parameters are held in :attr:`config`, a
    :class:`~contrast_attn.functional.class_balanced.ClassBalancedConfig`, and
    read as attributes (``loss.beta``). Weights are recomputed from the counts at every call (a ``[C]``
    float64 computation).

    Args:
        counts: ``[C]`` training samples per class, or ``None`` to start from zeros
            (then ``num_classes`` is required and :meth:`update` fills the counts).
        num_classes: ``C``; optional when ``counts`` is given (must then agree).
        beta: :math:`\beta \in [0, 1)`.
        loss_type: ``"softmax"``, ``"sigmoid"`` or ``"focal"``.
        gamma: Focal exponent :math:`\gamma \ge 0`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        ignore_index: Target value to skip.
        label_smoothing: :math:`\varepsilon \in [0, 1]` (softmax only).
        normalization: ``"reference"`` (the reference code's mean) or
            ``"weight_sum"`` (``F.cross_entropy(weight=...)``'s mean).
        zero_count: ``"error"``, ``"as_one"`` or ``"zero_weight"`` for classes
            without samples. With ``"error"``, given counts are checked at
            construction, so a missing class fails at once.
        label_weighting: ``"reference"`` (each row weighted by :math:`\alpha_i`) or
            ``"per_label"`` (each label's term by its class's weight; sigmoid/focal).

    Shape:
        ``loss(logits, target)`` with logits ``[B, C]`` and target ``[B]`` (class
        indices) or ``[B, C]`` (multi-hot, sigmoid/focal); returns a scalar
        (``[B]`` for ``reduction="none"``).

    Raises:
        TypeError: Wrong argument types (see :func:`~contrast_attn.functional.class_balanced_loss`).
        ValueError: Neither ``counts`` nor ``num_classes``; ``counts`` not matching
            ``num_classes``, negative or not whole; a class without samples and
            ``zero_count="error"``; a hyper-parameter out of range. In the call, a
            ``C`` of the logits other than ``num_classes`` and the errors of
            :func:`~contrast_attn.functional.class_balanced_loss`.

    References:
        Cui et al., "Class-Balanced Loss Based on Effective Number of Samples",
        CVPR 2019 (arXiv:1901.05555).

    Examples:
        >>> import torch
        >>> from contrast_attn import ClassBalancedLoss
        >>> labels = torch.tensor([0] * 90 + [1] * 9 + [2])
        >>> criterion = ClassBalancedLoss.from_labels(labels, num_classes=3, beta=0.99)
        >>> criterion.counts
        tensor([90,  9,  1])
        >>> criterion.weights()
        tensor([0.0445, 0.3063, 2.6492], dtype=torch.float64)
        >>> loss = criterion(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
        >>> criterion.load_state_dict({"counts": torch.tensor([50, 40, 10])})
        <All keys matched successfully>
    """

    config: ClassBalancedConfig

    def __init__(
        self,
        counts: Counts | None = None,
        *,
        num_classes: int | None = None,
        beta: float = 0.9999,
        loss_type: str = "softmax",
        gamma: float = 2.0,
        reduction: str = "mean",
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        normalization: str = "reference",
        zero_count: str = "error",
        label_weighting: str = "reference",
    ) -> None:
        config = ClassBalancedConfig(
            beta,
            loss_type,
            gamma,
            reduction,
            ignore_index,
            label_smoothing,
            normalization,
            zero_count,
            label_weighting,
        )
        # With zero_count="error" a missing class fails here, at once.
        super().__init__(counts, num_classes=num_classes, config=config)

    def weights(self) -> torch.Tensor:
        """The current class weights ``[C]`` (float64), from the ``counts`` buffer."""
        return class_balanced_weights(self.counts, self.beta, zero_count=self.zero_count)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return class_balanced(self.config, logits, target, self.counts)
