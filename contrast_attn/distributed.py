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
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_reduce_sum",
    "gather_variable_with_grad",
    "gather_with_grad",
    "is_distributed",
    "rank_and_world_size",
]


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

    Every rank must pass a tensor of the same shape. Outside a process group
    (or with one rank) the tensor is returned unchanged.

    Args:
        tensor: ``[B, ...]`` on this rank.

    Returns:
        ``[world_size * B, ...]``, rank 0's rows first. This rank's rows start at
        ``rank * B``.

    Examples:
        >>> import torch
        >>> from contrast_attn.distributed import gather_with_grad
        >>> gather_with_grad(torch.ones(2, 3)).shape  # no process group: unchanged
        torch.Size([2, 3])
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return tensor
    out: torch.Tensor = _GatherWithGrad.apply(tensor)
    return out


def gather_variable_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather ``tensor`` along dim 0 when ranks hold different numbers of rows.

    The row counts are all-gathered first; each rank pads its rows with zeros to
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

    Examples:
        >>> import torch
        >>> from contrast_attn.distributed import gather_variable_with_grad
        >>> rows, offset = gather_variable_with_grad(torch.ones(3, 2))  # no process group
        >>> rows.shape, offset
        (torch.Size([3, 2]), 0)
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return tensor, 0
    counts = gather_no_grad(torch.tensor([tensor.shape[0]], device=tensor.device)).tolist()
    longest = max(counts)
    if longest == 0:
        return tensor, 0
    padding = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
    gathered = gather_with_grad(torch.cat([tensor, padding]))
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

    Examples:
        >>> import torch
        >>> from contrast_attn.distributed import all_reduce_sum
        >>> counts = torch.tensor([3, 1, 2])
        >>> all_reduce_sum(counts)  # no process group: a copy
        tensor([3, 1, 2])
    """
    out = tensor.detach().clone()
    if is_distributed() and dist.get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
