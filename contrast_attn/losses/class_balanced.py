r"""The class-balanced loss as an ``nn.Module`` whose class counts are a buffer."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader
from typing_extensions import Self

from .. import _checks
from .._config import ConfiguredModule
from ..distributed import all_reduce_sum
from ..functional.class_balanced import (
    ClassBalancedConfig,
    Counts,
    check_counts,
    class_balanced,
    class_balanced_weights,
)

__all__ = ["ClassBalancedLoss"]

_LABEL_KEYS = ("target", "targets", "label", "labels")


def _count_labels(labels: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Per-class counts ``[C]`` (long) of class indices ``[N]`` or multi-hot ``[N, C]`` labels.

    Fixed shapes (no ``bincount`` or selection) and one value check.
    """
    _checks.check_tensor(labels, "labels")
    checks = _checks.ValueChecks()
    if labels.ndim == 2:
        if labels.shape[1] != num_classes:
            raise ValueError(
                f"multi-hot labels must have shape [N, C] = [N, {num_classes}], got shape "
                f"{tuple(labels.shape)}"
            )
        if checks.enabled and labels.dtype != torch.bool:
            other = (labels != 0) & (labels != 1)
            checks.flag(
                other.any(),
                lambda: (
                    f"multi-hot labels must hold only 0/1 (or be a bool tensor), got "
                    f"{torch.unique(labels[other])[:5].tolist()}"
                ),
            )
        checks.run()
        return labels.to(torch.long).sum(dim=0)
    if labels.ndim != 1:
        raise ValueError(
            f"labels must have shape [N] (class indices) or [N, C] (multi-hot), got shape "
            f"{tuple(labels.shape)}"
        )
    _checks.check_labels(labels, "labels", labels.shape[0])
    kept = labels != ignore_index
    index = torch.where(kept, labels, 0).to(torch.long)
    if checks.enabled and labels.numel() > 0:
        low, high = torch.aminmax(index)

        def message() -> str:
            bad = kept & ((labels < 0) | (labels >= num_classes))
            return (
                f"labels must be class indices in [0, {num_classes}) (num_classes = "
                f"{num_classes}) or ignore_index={ignore_index}, got "
                f"{torch.unique(labels[bad])[:5].tolist()}"
            )

        checks.flag((low < 0) | (high >= num_classes), message)
    checks.run()
    counts = torch.zeros(num_classes, dtype=torch.long, device=labels.device)
    return counts.index_add_(0, index.clamp(0, num_classes - 1), kept.long())


def _item_label(item: Any) -> Any:
    """The label of one dataset item or loader batch: ``item[1]`` or a label key of a dict."""
    if isinstance(item, Mapping):
        for key in _LABEL_KEYS:
            if key in item:
                return item[key]
        raise TypeError(
            f"dataset items are dicts without a label key (looked for {list(_LABEL_KEYS)}), "
            f"got keys {list(item)}"
        )
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[1]
    raise TypeError(
        f"cannot find the label in a dataset item of type {type(item).__name__}: expected "
        f"(input, label, ...) or a dict with one of {list(_LABEL_KEYS)}; count the labels "
        f"yourself and use ClassBalancedLoss.from_labels"
    )


def _with_progress(items: Iterable[Any], total: int | None, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return items
    try:
        # Imported by name: tqdm is optional and ships no type information.
        tqdm = importlib.import_module("tqdm.auto").tqdm
    except ImportError:
        return items
    bar: Iterable[Any] = tqdm(items, total=total, desc="counting labels")
    return bar


class ClassBalancedLoss(ConfiguredModule):
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
    counts: torch.Tensor

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
        super().__init__()
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
        if num_classes is not None:
            _checks.check_int(num_classes, "num_classes", low=1)
        if counts is None:
            if num_classes is None:
                raise ValueError(
                    "pass counts, or num_classes to start from zero counts that update() fills; "
                    "got counts=None and num_classes=None"
                )
            buffer = torch.zeros(num_classes, dtype=torch.long)
        else:
            # With zero_count="error" a missing class fails here, at once.
            checked = check_counts(counts, num_classes, zero_count=zero_count)
            buffer = checked.to(torch.long)
        self.register_buffer("counts", buffer)
        self.config = config

    @property
    def num_classes(self) -> int:
        """The number of classes ``C``."""
        return int(self.counts.shape[0])

    @classmethod
    def from_labels(cls, labels: torch.Tensor, num_classes: int, **kwargs: Any) -> Self:
        """Build the loss from the training labels.

        Args:
            labels: ``[N]`` integer class indices (entries equal to ``ignore_index``
                are skipped) or ``[N, C]`` multi-hot 0/1 labels of the training set.
            num_classes: ``C``.
            **kwargs: The other constructor arguments (``beta``, ``loss_type``, ...).

        Returns:
            The loss with ``counts`` set to the label counts (not all-reduced: pass
            the labels of the whole training set).

        Raises:
            TypeError: ``labels`` not a tensor of integers (or of 0/1 for multi-hot).
            ValueError: Labels outside ``[0, C)`` (other than ``ignore_index``), a
                multi-hot width other than ``C``, a class without samples with
                ``zero_count="error"``.
        """
        _checks.check_int(num_classes, "num_classes", low=1)
        ignore_index = kwargs.get("ignore_index", -100)
        counts = _count_labels(labels, num_classes, ignore_index)
        return cls(counts, num_classes=num_classes, **kwargs)

    @classmethod
    def from_dataset(
        cls, dataset_or_loader: Any, num_classes: int, *, progress: bool = True, **kwargs: Any
    ) -> Self:
        """Build the loss from a dataset or data loader.

        A ``targets`` attribute (torchvision's datasets have one) is used directly.
        Otherwise the object is iterated: a :class:`~torch.utils.data.DataLoader`
        batch by batch, a map-style dataset item by item (which loads every input,
        so prefer a ``targets`` attribute for large datasets). The label of an item
        or batch is its second element, or the ``"target"``/``"targets"``/``"label"``/
        ``"labels"`` entry of a dict. A per-item label is a class index or a ``[C]``
        multi-hot vector. A progress bar is shown when ``tqdm`` is installed and
        ``progress`` is true.

        Args:
            dataset_or_loader: A dataset (with ``targets`` or yielding labelled items)
                or a data loader.
            num_classes: ``C``.
            progress: Show a tqdm progress bar while iterating.
            **kwargs: The other constructor arguments.

        Returns:
            The loss with ``counts`` set to the dataset's label counts.

        Raises:
            TypeError: Items whose label cannot be found.
            ValueError: As :meth:`from_labels`.
        """
        _checks.check_int(num_classes, "num_classes", low=1)
        ignore_index = kwargs.get("ignore_index", -100)
        targets = getattr(dataset_or_loader, "targets", None)
        if targets is not None:
            counts = _count_labels(torch.as_tensor(targets), num_classes, ignore_index)
            return cls(counts, num_classes=num_classes, **kwargs)
        is_loader = isinstance(dataset_or_loader, DataLoader)
        size: int | None
        if not is_loader and hasattr(dataset_or_loader, "__getitem__"):
            size = len(dataset_or_loader)
            items: Iterable[Any] = (dataset_or_loader[i] for i in range(size))
        else:
            size = len(dataset_or_loader) if hasattr(dataset_or_loader, "__len__") else None
            items = iter(dataset_or_loader)
        counts = torch.zeros(num_classes, dtype=torch.long)
        for item in _with_progress(items, size, progress):
            label = torch.as_tensor(_item_label(item)).cpu()
            if not is_loader:
                label = label.reshape(1) if label.ndim == 0 else label.reshape(1, -1)
            counts += _count_labels(label, num_classes, ignore_index)
        return cls(counts, num_classes=num_classes, **kwargs)

    @torch.no_grad()
    def update(self, labels: torch.Tensor) -> None:
        """Add the labels of a batch to the running counts.

        Under an initialised ``torch.distributed`` process group the batch counts
        are summed over all ranks first, so every rank holds the same global counts;
        every rank must then call ``update`` (it is a collective operation).

        Args:
            labels: ``[B]`` class indices (``ignore_index`` skipped) or ``[B, C]``
                multi-hot 0/1 labels.

        Raises:
            TypeError: ``labels`` not a tensor of integers (or of 0/1 for multi-hot).
            ValueError: Labels outside ``[0, C)`` (other than ``ignore_index``) or a
                multi-hot width other than ``C``.
        """
        local = _count_labels(labels, self.num_classes, self.ignore_index)
        self.counts += all_reduce_sum(local.to(self.counts.device))

    def weights(self) -> torch.Tensor:
        """The current class weights ``[C]`` (float64), from the ``counts`` buffer."""
        return class_balanced_weights(self.counts, self.beta, zero_count=self.zero_count)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return class_balanced(self.config, logits, target, self.counts)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, {super().extra_repr()}"
