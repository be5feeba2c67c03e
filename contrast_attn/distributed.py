"""Helpers for ``torch.distributed``: gather with gradients, all-reduce of counts.

Contrastive losses want every sample of the global batch as a negative. With
``gather=True`` each rank all-gathers the embeddings of all ranks, computes the
loss of its *own* anchors against the *global* set of keys, and normalises by the
*global* anchor count, so that the mean of the ranks' losses equals the loss one
process would compute on the concatenated batch.

Gradients must reach every rank (a well-known trap: a plain
``torch.distributed.all_gather`` cuts the graph, and a gather whose backward only
keeps the local slice of the local gradient loses the contributions of the other
ranks' anchors). The backward of :func:`gather_with_grad` therefore *sums* the
gradients of all ranks (a reduce-scatter) and returns this rank's slice. Combined
with ``DistributedDataParallel``, which averages parameter gradients over ranks,
this gives exactly the gradient of the global loss.

Before gathering, the ranks exchange the shape and dtype of their tensors (one
``all_gather`` of eleven integers and one host synchronisation per call), so that a
mismatch, e.g. a last batch smaller on one rank, raises the same
:class:`ValueError` on every rank, naming each rank's shape and dtype, instead
of aborting inside the backend or hanging. :func:`gather_with_grad` skips this
exchange when value checks are off (:func:`contrast_attn.set_finite_checks`) or
while ``torch.compile`` traces; :func:`gather_variable_with_grad` exchanges the
row counts anyway and checks them in the same collective.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch
import torch.distributed as dist

from . import _checks

__all__ = [
    "all_reduce_sum",
    "gather_variable_with_grad",
    "gather_with_grad",
    "is_distributed",
    "rank_and_world_size",
]


# Dimensions exchanged per tensor by the cross-rank check (further ones are not compared).
_MAX_DIMS = 8
_DTYPES = {
    zlib.crc32(str(dtype).encode()): dtype
    for dtype in vars(torch).values()
    if isinstance(dtype, torch.dtype)
}


def _check_gatherable(tensor: Any) -> torch.Tensor:
    """A tensor with a dim 0 to gather along (TypeError/ValueError otherwise), in or out of a group."""
    checked = _checks.check_tensor(tensor, "tensor")
    if checked.ndim == 0:
        raise ValueError(
            "tensor must have at least one dimension (the rows gathered along dim 0), got a "
            "0-d tensor"
        )
    return checked


def _agree_across_ranks(tensor: torch.Tensor, same_rows: bool) -> list[int]:
    """Check shape and dtype on every rank (one small all_gather); return the row counts.

    With ``same_rows`` the whole shape must agree, else all but dim 0. Every rank
    raises the same ValueError, so none is left waiting in a later collective.
    """
    dims = list(tensor.shape) + [-1] * _MAX_DIMS
    code = zlib.crc32(str(tensor.dtype).encode())
    local = torch.tensor([[code, tensor.ndim, *dims[: _MAX_DIMS + 1]]], device=tensor.device)
    ranks = [tuple(row) for row in gather_no_grad(local).tolist()]
    first = 3 if not same_rows else 2
    if any(row[:2] + row[first:] != ranks[0][:2] + ranks[0][first:] for row in ranks):
        shapes = ", ".join(
            f"rank {r}: shape {tuple(row[2 : 2 + row[1]])} {_DTYPES.get(row[0], 'unknown dtype')}"
            for r, row in enumerate(ranks)
        )
        what = "shape" if same_rows else "shape after dim 0"
        hint = (
            " (a loss with gather=True needs the same batch size on every rank: e.g. "
            "drop_last=True in the DataLoader)"
            if same_rows
            else ""
        )
        raise ValueError(
            f"tensor must have the same {what} and dtype on every rank{hint}; got {shapes}"
        )
    return [row[2] for row in ranks]


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is available and initialised.

    Returns:
        ``True`` inside an initialised process group, else ``False``.

    Examples:
        >>> from contrast_attn.distributed import is_distributed
        >>> is_distributed()  # no process group
        False
    """
    return dist.is_available() and dist.is_initialized()


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)``, or ``(0, 1)`` outside a process group.

    Returns:
        This process's rank and the number of processes of the default group.

    Examples:
        >>> from contrast_attn.distributed import rank_and_world_size
        >>> rank_and_world_size()  # no process group
        (0, 1)
    """
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        world_size = dist.get_world_size()
        ctx.rank = dist.get_rank()
        ctx.batch = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.batch
        return grad[start : start + ctx.batch]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather ``tensor`` along dim 0 from every rank, keeping gradients.

    Every rank must pass a tensor of the same shape and dtype; this is checked
    first, at the cost of one small all-gather and one host synchronisation (not
    with value checks off, see :func:`contrast_attn.set_finite_checks`). Outside a
    process group (or with one rank) the tensor is returned unchanged.

    Args:
        tensor: ``[B, ...]`` on this rank.

    Returns:
        ``[world_size * B, ...]``, rank 0's rows first. This rank's rows start at
        ``rank * B``.

    Raises:
        TypeError: ``tensor`` is not a tensor.
        ValueError: A 0-d or meta tensor; shapes or dtypes that differ between ranks
            (raised on every rank).

    Examples:
        >>> import torch
        >>> from contrast_attn.distributed import gather_with_grad
        >>> gather_with_grad(torch.ones(2, 3)).shape  # no process group: unchanged
        torch.Size([2, 3])
    """
    tensor = _check_gatherable(tensor)
    if not is_distributed() or dist.get_world_size() == 1:
        return tensor
    if _checks.finite_checks_enabled() and not torch.compiler.is_compiling():
        _agree_across_ranks(tensor, same_rows=True)
    out: torch.Tensor = _GatherWithGrad.apply(tensor)
    return out


def gather_variable_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather ``tensor`` along dim 0 when ranks hold different numbers of rows.

    The row counts are all-gathered first, with the trailing shape and dtype,
    which must agree on every rank; each rank pads its rows with zeros to
    the largest count, :func:`gather_with_grad` gathers the padded blocks, and the
    padding rows are dropped again. Gradients flow back to every rank's own rows as
    with :func:`gather_with_grad`. A rank with no row still takes part in the
    collectives (every rank must call this function). Outside a process group (or
    with one rank) the tensor is returned unchanged.

    Args:
        tensor: ``[B_r, ...]`` on rank :math:`r`; the trailing dimensions, dtype and
            device agree on every rank.

    Returns:
        ``(gathered, offset)``: ``[B_0 + B_1 + ..., ...]``, rank 0's rows first, and
        the index of this rank's first row in it, :math:`B_0 + ... + B_{r-1}`.

    Raises:
        TypeError: ``tensor`` is not a tensor.
        ValueError: A 0-d or meta tensor; trailing shapes or dtypes that differ
            between ranks (raised on every rank).

    Examples:
        >>> import torch
        >>> from contrast_attn.distributed import gather_variable_with_grad
        >>> rows, offset = gather_variable_with_grad(torch.ones(3, 2))  # no process group
        >>> rows.shape, offset
        (torch.Size([3, 2]), 0)
    """
    tensor = _check_gatherable(tensor)
    if not is_distributed() or dist.get_world_size() == 1:
        return tensor, 0
    counts = _agree_across_ranks(tensor, same_rows=False)
    longest = max(counts)
    if longest == 0:
        return tensor, 0
    padding = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
    gathered: torch.Tensor = _GatherWithGrad.apply(torch.cat([tensor, padding]))
    rows = [gathered[r * longest : r * longest + count] for r, count in enumerate(counts)]
    return torch.cat(rows), sum(counts[: dist.get_rank()])


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 without gradients (labels, counts)."""
    if not is_distributed() or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a (detached) tensor over ranks; identity outside a process group.

    Args:
        tensor: any shape, the same on every rank (e.g. class counts ``[C]``).

    Returns:
        A new tensor, the element-wise sum over ranks (a detached copy outside a
        process group); the input is not modified.

    Raises:
        TypeError: ``tensor`` is not a tensor.
        ValueError: A meta tensor.

    Examples:
        >>> import torch
        >>> from contrast_attn.distributed import all_reduce_sum
        >>> counts = torch.tensor([3, 1, 2])
        >>> all_reduce_sum(counts)  # no process group: a copy
        tensor([3, 1, 2])
    """
    out = _checks.check_tensor(tensor, "tensor").detach().clone()
    if is_distributed() and dist.get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
