"""update() of every count-holding loss across two gloo ranks: every rank ends with the
global counts, and the losses (class-balanced weights included) agree on every rank."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from contrast_attn import (
    BalancedSoftmaxLoss,
    ClassBalancedLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    PostHocLogitAdjustment,
)
from tests._dist import free_port

WORLD_SIZE = 2
NUM_CLASSES = 4
# Each rank sees different labels; the global counts are their sum.
RANK_BATCHES = {
    0: [torch.tensor([0, 0, 1]), torch.tensor([3, -100])],
    1: [torch.tensor([2, 2, 2, 0]), torch.tensor([1])],
}
GLOBAL_COUNTS = [3, 2, 3, 1]


def _equal_on_every_rank(value: torch.Tensor, what: str) -> None:
    gathered = [torch.empty_like(value) for _ in range(WORLD_SIZE)]
    dist.all_gather(gathered, value.contiguous())
    assert torch.equal(gathered[0], gathered[1]), what


def _worker(rank: int, port: int) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        torch.set_num_threads(1)
        logits = torch.linspace(-2.0, 2.0, 3 * NUM_CLASSES).reshape(3, NUM_CLASSES)
        target = torch.tensor([0, 1, 3])
        modules = [
            ClassBalancedLoss(num_classes=NUM_CLASSES, beta=0.9),
            *(
                cls(num_classes=NUM_CLASSES)
                for cls in (LogitAdjustedLoss, BalancedSoftmaxLoss, LDAMLoss)
            ),
            PostHocLogitAdjustment(num_classes=NUM_CLASSES),
        ]
        for module in modules:
            name = type(module).__name__
            for labels in RANK_BATCHES[rank]:
                module.update(labels)
            assert module.counts.tolist() == GLOBAL_COUNTS, (rank, name, module.counts.tolist())
            if isinstance(module, ClassBalancedLoss):
                _equal_on_every_rank(module.weights(), f"{name} weights")
            out = (
                module(logits)
                if isinstance(module, PostHocLogitAdjustment)
                else module(logits, target)
            )
            _equal_on_every_rank(out, name)
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.xdist_group("distributed")
def test_update_all_reduces_counts_across_ranks() -> None:
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    mp.spawn(_worker, args=(free_port(),), nprocs=WORLD_SIZE, join=True)
