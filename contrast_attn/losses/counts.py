r"""Per-class training counts held as a module buffer, for the losses built on them.

:class:`ClassCountsModule` is the base of every loss whose formula needs the class
counts :math:`n_c`: it keeps them in a long ``counts`` buffer (saved in
``state_dict``, moved by ``.to()``), builds the module from labels or a dataset,
and accumulates counts during training with :meth:`~ClassCountsModule.update`,
summed over ``torch.distributed`` ranks.
"""

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
from ..functional.class_balanced import Counts, CountsPolicy

__all__ = ["ClassCountsModule", "count_labels"]

IGNORE_INDEX = -100
_LABEL_KEYS = ("target", "targets", "label", "labels")


def count_labels(
    labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Per-class counts of class indices ``[N]`` or multi-hot 0/1 labels ``[N, C]``.

    Fixed shapes (no ``bincount`` or selection) and one value check.

    Args:
        labels: ``[N]`` integer class indices (``ignore_index`` skipped) or ``[N, C]``
            multi-hot labels (bool or numbers 0/1).
        num_classes: ``C``.
        ignore_index: Class-index value to skip.

    Returns:
        ``[C]`` long counts on the device of ``labels``.

    Raises:
        TypeError: ``labels`` not a tensor, or class indices that are not integers.
        ValueError: Indices outside ``[0, C)`` (other than ``ignore_index``), a
            multi-hot width other than ``C`` or values other than 0/1, another shape.

    Examples:
        >>> import torch
        >>> from contrast_attn.losses.counts import count_labels
        >>> count_labels(torch.tensor([0, 2, 2, -100]), 3)
        tensor([1, 0, 2])
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


def _item_label(item: Any, owner: str) -> Any:
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
        f"yourself and use {owner}.from_labels"
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


class ClassCountsModule(ConfiguredModule):
    """Base of the losses that hold per-class sample counts as a buffer.

    Subclasses take ``counts`` first and ``num_classes`` as a keyword, build their
    record and pass all three to this constructor; they inherit :meth:`from_labels`,
    :meth:`from_dataset` and :meth:`update`, which skip the labels equal to the
    record's ``ignore_index`` (-100 for a record without one).

    Args:
        counts: ``[C]`` training samples per class, or ``None`` to start from zeros
            (then ``num_classes`` is required and :meth:`update` fills the counts).
        num_classes: ``C``; optional when ``counts`` is given (must then agree).
        config: The loss's validated hyper-parameters; its ``check_counts``
            validates given counts at once (a class without samples fails here
            under ``zero_count="error"``).

    Raises:
        TypeError: ``counts`` of a wrong kind; ``num_classes`` not an int.
        ValueError: Neither ``counts`` nor ``num_classes``; ``counts`` not matching
            ``num_classes``, negative or not whole, or rejected by ``config``.
    """

    counts: torch.Tensor

    def __init__(
        self, counts: Counts | None, *, num_classes: int | None, config: CountsPolicy
    ) -> None:
        super().__init__()
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
            buffer = config.check_counts(counts, num_classes).to(torch.long)
        self.register_buffer("counts", buffer)
        self.config = config

    @property
    def num_classes(self) -> int:
        """The number of classes ``C``."""
        return int(self.counts.shape[0])

    @classmethod
    def from_labels(cls, labels: torch.Tensor, num_classes: int, **kwargs: Any) -> Self:
        """Build the module from the training labels.

        Args:
            labels: ``[N]`` integer class indices (entries equal to ``ignore_index``
                are skipped) or ``[N, C]`` multi-hot 0/1 labels of the training set.
            num_classes: ``C``.
            **kwargs: The other constructor arguments.

        Returns:
            The module with ``counts`` set to the label counts (not all-reduced: pass
            the labels of the whole training set).

        Raises:
            TypeError: ``labels`` not a tensor of integers (or of 0/1 for multi-hot).
            ValueError: Labels outside ``[0, C)`` (other than ``ignore_index``), a
                multi-hot width other than ``C``, and the constructor's errors (e.g.
                a class without samples with ``zero_count="error"``).
        """
        _checks.check_int(num_classes, "num_classes", low=1)
        counts = count_labels(labels, num_classes, kwargs.get("ignore_index", IGNORE_INDEX))
        return cls(counts, num_classes=num_classes, **kwargs)

    @classmethod
    def from_dataset(
        cls, dataset_or_loader: Any, num_classes: int, *, progress: bool = True, **kwargs: Any
    ) -> Self:
        """Build the module from a dataset or data loader.

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
            The module with ``counts`` set to the dataset's label counts.

        Raises:
            TypeError: Items whose label cannot be found.
            ValueError: As :meth:`from_labels`.
        """
        _checks.check_int(num_classes, "num_classes", low=1)
        ignore_index = kwargs.get("ignore_index", IGNORE_INDEX)
        targets = getattr(dataset_or_loader, "targets", None)
        if targets is not None:
            counts = count_labels(torch.as_tensor(targets), num_classes, ignore_index)
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
            label = torch.as_tensor(_item_label(item, cls.__name__)).cpu()
            if not is_loader:
                label = label.reshape(1) if label.ndim == 0 else label.reshape(1, -1)
            counts += count_labels(label, num_classes, ignore_index)
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
        ignore_index = getattr(self.config, "ignore_index", IGNORE_INDEX)
        local = count_labels(labels, self.num_classes, ignore_index)
        self.counts += all_reduce_sum(local.to(self.counts.device))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, {super().extra_repr()}"
