"""The memory queue: FIFO semantics, losses equal to explicit reference keys, state_dict,
and identical queues on two gloo ranks (DDP = one process)."""

from __future__ import annotations

import io
from collections import deque
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from contrast_attn import MemoryQueue, NTXentLoss, SupConLoss
from contrast_attn.functional import nt_xent_loss, supcon_loss
from tests import _ddp_cases
from tests._dist import free_port


def test_fifo_keeps_the_newest_keys() -> None:
    generator = torch.Generator().manual_seed(0)
    queue = MemoryQueue(7, 3, dtype=torch.float64)
    reference: deque[tuple[tuple[float, ...], int]] = deque(maxlen=7)
    label = 0
    for count in (3, 2, 5, 1, 9, 4):
        keys = torch.randn(count, 3, generator=generator, dtype=torch.float64)
        labels = torch.arange(label, label + count)
        label += count
        queue.enqueue(keys, labels)
        for row, y in zip(F.normalize(keys, dim=1), labels):
            reference.append((tuple(row.tolist()), int(y)))
        held, held_labels = queue.contents()
        assert held.shape[0] == len(reference) == queue.filled
        # Keys are normalised in a way that cannot overflow: equal to F.normalize to 1e-15.
        order = torch.argsort(held_labels)
        expected = sorted(reference, key=lambda item: item[1])
        assert held_labels[order].tolist() == [y for _, y in expected]
        torch.testing.assert_close(
            held[order],
            torch.tensor([row for row, _ in expected], dtype=torch.float64),
            rtol=0,
            atol=1e-15,
        )


def _batches(steps: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(5, 2, 4, generator=generator, dtype=torch.float64),
            torch.randint(0, 3, (5,), generator=generator),
        )
        for _ in range(steps)
    ]


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_supcon_with_memory_equals_explicit_refs(chunk_size: int | None) -> None:
    criterion = SupConLoss(
        0.2, chunk_size=chunk_size, memory=MemoryQueue(13, 4, dtype=torch.float64)
    )
    assert criterion.memory is not None
    for features, labels in _batches(4):
        refs, ref_labels = (t.clone() for t in criterion.memory.contents())
        expected = supcon_loss(
            features,
            labels,
            temperature=0.2,
            chunk_size=chunk_size,
            ref_features=refs,
            ref_labels=ref_labels,
        )
        assert criterion(features, labels).item() == expected.item()
    assert criterion.memory.filled == 13


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_nt_xent_with_memory_equals_explicit_refs(chunk_size: int | None) -> None:
    criterion = NTXentLoss(
        0.5, chunk_size=chunk_size, memory=MemoryQueue(8, 4, dtype=torch.float64)
    )
    assert criterion.memory is not None
    for features, _ in _batches(3, seed=1):
        refs = criterion.memory.contents()[0].clone()
        expected = nt_xent_loss(features, chunk_size=chunk_size, ref_features=refs)
        z1, z2 = features.unbind(1)
        assert criterion(z1, z2).item() == expected.item()


def test_first_call_is_todays_loss_and_gradients_flow() -> None:
    features, labels = _batches(1, seed=2)[0]
    features.requires_grad_()
    criterion = SupConLoss(memory=MemoryQueue(20, 4, dtype=torch.float64))
    loss = criterion(features, labels)
    assert loss.item() == pytest.approx(supcon_loss(features, labels).item(), rel=1e-12)
    loss.backward()
    assert features.grad is not None
    assert criterion.memory is not None and not criterion.memory.keys.requires_grad


def test_state_dict_round_trip_continues_identically() -> None:
    batches = _batches(5, seed=3)
    criterion = SupConLoss(memory=MemoryQueue(9, 4, dtype=torch.float64))
    for features, labels in batches[:3]:
        criterion(features, labels)
    buffer = io.BytesIO()
    torch.save(criterion.state_dict(), buffer)
    buffer.seek(0)
    restored = SupConLoss(memory=MemoryQueue(9, 4, dtype=torch.float64))
    restored.load_state_dict(torch.load(buffer))
    assert criterion.memory is not None and restored.memory is not None
    assert (restored.memory.filled, restored.memory.next) == (9, criterion.memory.next)
    assert torch.equal(restored.memory.keys, criterion.memory.keys)
    for features, labels in batches[3:]:
        assert restored(features, labels).item() == criterion(features, labels).item()


def test_multi_hot_labels_and_gather_outside_a_group() -> None:
    queue = MemoryQueue(4, 2, label_shape=(3,))
    queue.enqueue(torch.randn(2, 2), torch.tensor([[1, 0, 1], [0, 0, 0]]), gather=True)
    assert queue.contents()[1].tolist() == [[1, 0, 1], [0, 0, 0]]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="size must be >= 1"):
        MemoryQueue(0, 3)
    with pytest.raises(TypeError, match=r"dtype must be a floating torch\.dtype"):
        MemoryQueue(3, 3, dtype=torch.long)
    queue = MemoryQueue(3, 4)
    with pytest.raises(ValueError, match=r"keys must have shape \[G, D\] with D = 4"):
        queue.enqueue(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"labels must have shape \[2\]"):
        queue.enqueue(torch.randn(2, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="memory must be a MemoryQueue"):
        SupConLoss(memory=torch.zeros(3))  # type: ignore[arg-type]


STEPS = 3
QUEUE = 20  # does not divide the 16 keys enqueued per step: the queue wraps mid-batch


def _step_inputs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(5)
    return [
        (
            torch.randn(8, 2, 5, generator=generator, dtype=torch.float64),
            torch.randint(0, 3, (8,), generator=generator),
        )
        for _ in range(STEPS)
    ]


def _run_steps(rows: slice, gather: bool) -> dict[str, object]:
    net = _ddp_cases.model()
    model = DistributedDataParallel(net) if gather else net
    criterion = SupConLoss(
        0.3, gather=gather, chunk_size=3, memory=MemoryQueue(QUEUE, 6, dtype=torch.float64)
    )
    losses, grads = [], []
    for x, labels in _step_inputs():
        model.zero_grad()
        loss = criterion(model(x[rows]), labels[rows])
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.detach().clone() for p in model.parameters()])
    assert criterion.memory is not None
    return {"losses": losses, "grads": grads, "state": criterion.memory.state_dict()}


def _worker(rank: int, port: int, out_dir: str) -> None:
    _ddp_cases.init_gloo(rank, port)
    try:
        result = _run_steps(slice(rank * 4, (rank + 1) * 4), True)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.xdist_group("distributed")
def test_ddp_queues_stay_identical_and_equal_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    a, b = ranks[0]["state"], ranks[1]["state"]
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key
    single = _run_steps(slice(None), False)
    for step in range(STEPS):
        mean = torch.stack([r["losses"][step] for r in ranks]).mean()
        torch.testing.assert_close(mean, single["losses"][step], rtol=1e-6, atol=1e-12)
        for r in ranks:
            for grad, expected in zip(r["grads"][step], single["grads"][step]):
                torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-12)
    # Ranks hold contiguous samples and enqueue them sample-major, so the gathered rows
    # come in one process's order: the same keys in the same slots.
    torch.testing.assert_close(a["keys"], single["state"]["keys"], rtol=0, atol=1e-12)
    assert torch.equal(a["labels"], single["state"]["labels"])
