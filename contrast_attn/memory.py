"""A MoCo-style memory queue of past keys and their labels for the contrastive losses."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import _checks
from ._rows import normalize_rows
from .distributed import gather_no_grad

__all__ = ["MemoryQueue"]


class MemoryQueue(nn.Module):
    """A first-in first-out queue of detached, L2-normalised embeddings with their labels.

    The queue holds up to ``size`` keys. :meth:`enqueue` writes a batch of keys
    over the oldest ones; :meth:`contents` returns the keys held so far (and
    their labels), to be passed as ``ref_features`` / ``ref_labels`` of
    :func:`~contrast_attn.functional.supcon_loss` or
    :func:`~contrast_attn.functional.nt_xent_loss`, which is what
    :class:`~contrast_attn.SupConLoss` and :class:`~contrast_attn.NTXentLoss` do
    when given ``memory=``: the loss is computed against the queue's contents,
    then the batch's keys are enqueued (He et al.'s MoCo order: a batch never
    contrasts with itself twice).

    Age of keys: with :math:`G` keys enqueued per step (the global batch's rows,
    all views, when ``gather=True``), a key is used by the next
    :math:`\\lfloor K / G \\rfloor` steps (:math:`K` = ``size``) and then
    overwritten, so the oldest key in a full queue was computed by the encoder
    :math:`\\lceil K / G \\rceil` steps ago. Keys are not refreshed: the older they
    are, the more they differ from what the current encoder would give (MoCo
    answers this with a slowly moving momentum encoder; with the encoder being
    trained, keep :math:`K / G` small, or pass a momentum encoder's embeddings).

    Distributed training: with ``gather=True`` every rank all-gathers the batch's
    keys and labels (without gradients) and enqueues the same global rows, so the
    queues stay identical on every rank; every rank must then enqueue the same
    number of rows. The queue's keys, labels and fill state are saved in
    ``state_dict`` (the fill state as the module's extra state), and move with
    ``.to()``.

    Args:
        size: :math:`K`, the number of keys held.
        dim: :math:`D`, the embedding dimension.
        label_shape: Shape of one label: ``()`` for class indices, ``(C,)`` for
            multi-hot label sets.
        dtype: The keys' dtype (float32 by default; float64 for exact tests).
        kinds: Also hold a kind per key (:meth:`kinds`), for the contrastive feature
            regulariser: 1 for a lesion embedding, 0 for a background embedding, -1
            for a row that takes no part (a region that did not qualify).

    Raises:
        TypeError: ``size`` or ``dim`` not an int, ``dtype`` not a floating dtype,
            ``kinds`` not a bool; in :meth:`enqueue`, keys or labels that are not
            tensors (keys not floating).
        ValueError: ``size`` or ``dim`` below 1, ``label_shape`` not ``()`` or
            ``(C,)``; in :meth:`enqueue`, keys not ``[N, dim]``, labels of another
            batch or shape, ``kind`` given to a queue without kinds (or missing).

    Examples:
        >>> import torch
        >>> from contrast_attn import MemoryQueue
        >>> queue = MemoryQueue(4, 3)
        >>> queue.enqueue(torch.randn(3, 3), torch.tensor([0, 1, 1]))
        >>> keys, labels = queue.contents()
        >>> keys.shape, labels.tolist()
        (torch.Size([3, 3]), [0, 1, 1])
        >>> queue.enqueue(torch.randn(2, 3), torch.tensor([2, 2]))  # overwrites the oldest
        >>> queue.contents()[1].tolist()
        [2, 1, 1, 2]
    """

    keys: torch.Tensor
    labels: torch.Tensor

    def __init__(
        self,
        size: int,
        dim: int,
        *,
        label_shape: tuple[int, ...] = (),
        dtype: torch.dtype = torch.float32,
        kinds: bool = False,
    ) -> None:
        super().__init__()
        self.size = _checks.check_int(size, "size", low=1)
        self.dim = _checks.check_int(dim, "dim", low=1)
        if not isinstance(label_shape, tuple) or len(label_shape) > 1:
            raise ValueError(f"label_shape must be () or (C,), got {label_shape!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.register_buffer("keys", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("labels", torch.zeros(size, *label_shape, dtype=torch.long))
        self.kind: torch.Tensor | None
        if _checks.check_bool(kinds, "kinds"):
            self.register_buffer("kind", torch.full((size,), -1, dtype=torch.long))
        else:
            self.kind = None
        self.filled = 0
        self.next = 0

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys held ``[M, D]`` and their labels ``[M, ...]`` (``M = min(enqueued, K)``).

        Slots are returned in storage order (the losses do not depend on the order).
        The fill state is a Python number: nothing waits for the device.
        """
        return self.keys[: self.filled], self.labels[: self.filled]

    def kinds(self) -> torch.Tensor:
        """The kinds ``[M]`` of the keys held (1 lesion, 0 background, -1 no part).

        Raises:
            ValueError: The queue was built without ``kinds=True``.
        """
        if self.kind is None:
            raise ValueError("this MemoryQueue holds no kinds; build it with kinds=True")
        return self.kind[: self.filled]

    @torch.no_grad()
    def enqueue(
        self,
        keys: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        kind: torch.Tensor | None = None,
        gather: bool = False,
    ) -> None:
        """Write a batch of keys (detached, L2-normalised) over the oldest ones.

        Args:
            keys: ``[G, D]`` embeddings.
            labels: ``[G]`` (or ``[G, C]``) labels; ``None`` = zeros.
            kind: ``[G]`` kinds (with ``kinds=True`` only; required then).
            gather: All-gather keys and labels from every ``torch.distributed``
                rank first (the same rows are then enqueued on every rank).

        Raises:
            TypeError: Non-floating keys.
            ValueError: Keys not ``[G, D]`` or labels of the wrong shape.
        """
        _checks.check_floating_tensor(keys, "keys")
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(
                f"keys must have shape [G, D] with D = {self.dim}, got shape {tuple(keys.shape)}"
            )
        label_shape = tuple(self.labels.shape[1:])
        if labels is None:
            labels = self.labels.new_zeros((keys.shape[0], *label_shape))
        _checks.check_tensor(labels, "labels")
        if tuple(labels.shape) != (keys.shape[0], *label_shape):
            raise ValueError(
                f"labels must have shape {[keys.shape[0], *label_shape]} (one per key), got "
                f"shape {tuple(labels.shape)}"
            )
        if (kind is None) != (self.kind is None):
            raise ValueError(
                "kind must be given exactly when the queue holds kinds (MemoryQueue(kinds=True))"
            )
        parts = [
            normalize_rows(keys.detach()).to(self.keys.device, self.keys.dtype),
            labels.detach().to(self.labels.device, torch.long),
        ]
        if kind is not None:
            _checks.check_tensor(kind, "kind")
            if tuple(kind.shape) != (keys.shape[0],):
                raise ValueError(
                    f"kind must have shape [{keys.shape[0]}] (one per key), got shape "
                    f"{tuple(kind.shape)}"
                )
            parts.append(kind.detach().to(self.labels.device, torch.long))
        if gather:
            parts = [gather_no_grad(part) for part in parts]
        count = parts[0].shape[0]
        if count > self.size:
            parts = [part[-self.size :] for part in parts]
            self.next = (self.next + count - self.size) % self.size
            count = self.size
        slots = torch.arange(self.next, self.next + count, device=self.keys.device) % self.size
        self.keys.index_copy_(0, slots, parts[0])
        self.labels.index_copy_(0, slots, parts[1])
        if self.kind is not None:
            self.kind.index_copy_(0, slots, parts[2])
        self.next = (self.next + count) % self.size
        self.filled = min(self.filled + count, self.size)

    def get_extra_state(self) -> dict[str, int]:
        return {"filled": self.filled, "next": self.next}

    def set_extra_state(self, state: Any) -> None:
        self.filled, self.next = int(state["filled"]), int(state["next"])

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, filled={self.filled}"
