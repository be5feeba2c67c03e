"""ClassBalancedLoss.update() across two gloo ranks: every rank ends with the global counts."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from contrast_attn import ClassBalancedLoss
from tests._dist import free_port

WORLD_SIZE = 2
NUM_CLASSES = 4
# Each rank sees different labels; the global counts are their sum.
RANK_BATCHES = {
    0: [torch.tensor([0, 0, 1]), torch.tensor([3, -100])],
    1: [torch.tensor([2, 2, 2, 0]), torch.tensor([1])],
}
GLOBAL_COUNTS = [3, 2, 3, 1]


def _worker(rank: int, port: int) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        torch.set_num_threads(1)
        criterion = ClassBalancedLoss(num_classes=NUM_CLASSES, beta=0.9)
        for labels in RANK_BATCHES[rank]:
            criterion.update(labels)
        assert criterion.counts.tolist() == GLOBAL_COUNTS, (rank, criterion.counts.tolist())
        # The weights, hence the loss, agree on every rank.
        gathered = [torch.empty(NUM_CLASSES, dtype=torch.float64) for _ in range(WORLD_SIZE)]
        dist.all_gather(gathered, criterion.weights())
        assert torch.equal(gathered[0], gathered[1])
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.xdist_group("distributed")
def test_update_all_reduces_counts_across_ranks() -> None:
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    mp.spawn(_worker, args=(free_port(),), nprocs=WORLD_SIZE, join=True)
