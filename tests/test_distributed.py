"""DDP with ``gather=True`` equals one process on the concatenated batch.

Two ranks (gloo, CPU) are spawned once; each runs every case on its half of a
fixed global batch through a small model wrapped in ``DistributedDataParallel``
and saves its loss and the (DDP-averaged) parameter gradients. The test then
checks, in float64 to 1e-6, that the mean of the ranks' losses is the loss of
one process on the whole batch and that every rank holds that process's
parameter gradients.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from contrast_attn import distributed
from contrast_attn.functional import nt_xent_loss, supcon_loss

WORLD_SIZE = 2
PER_RANK = 4
VIEWS = 2
TILE = 3  # rows per tile: does not divide the 16 global rows

# Global labels: with one view, rank 0's anchors 2 and 3 (classes 2, 3) have no
# positive while all of rank 1's have one, so the per-rank anchor counts differ.
LABELS = torch.tensor([0, 1, 2, 3, 0, 0, 1, 1])
TWO_VIEW_LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 2, 0])

# A case maps (embeddings [B, V, D] of this process's samples, their labels, gather)
# to the loss.
Case = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]


def _cases() -> dict[str, tuple[Case, torch.Tensor]]:
    cases: dict[str, tuple[Case, torch.Tensor]] = {}
    for path, chunk in (("dense", None), ("tiled", TILE)):

        def ntxent(
            z: torch.Tensor, _: torch.Tensor, gather: bool, c: int | None = chunk
        ) -> torch.Tensor:
            return nt_xent_loss(z, temperature=0.5, gather=gather, chunk_size=c)

        def supcon_views(
            z: torch.Tensor, _: torch.Tensor, gather: bool, c: int | None = chunk
        ) -> torch.Tensor:
            return supcon_loss(z, temperature=0.2, gather=gather, chunk_size=c)

        def supcon_labels(
            z: torch.Tensor, labels: torch.Tensor, gather: bool, c: int | None = chunk
        ) -> torch.Tensor:
            return supcon_loss(z, labels, temperature=0.2, gather=gather, chunk_size=c)

        def supcon_in(
            z: torch.Tensor, labels: torch.Tensor, gather: bool, c: int | None = chunk
        ) -> torch.Tensor:
            return supcon_loss(z, labels, variant="in", gather=gather, chunk_size=c)

        def supcon_ignore(
            z: torch.Tensor, labels: torch.Tensor, gather: bool, c: int | None = chunk
        ) -> torch.Tensor:
            return supcon_loss(z[:, 0], labels, no_positive="ignore", gather=gather, chunk_size=c)

        cases[f"ntxent-{path}"] = (ntxent, TWO_VIEW_LABELS)
        cases[f"supcon-no-labels-{path}"] = (supcon_views, TWO_VIEW_LABELS)
        cases[f"supcon-labels-{path}"] = (supcon_labels, TWO_VIEW_LABELS)
        cases[f"supcon-in-{path}"] = (supcon_in, TWO_VIEW_LABELS)
        cases[f"supcon-ignore-{path}"] = (supcon_ignore, LABELS)
    return cases


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6)).double()


def _inputs() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(WORLD_SIZE * PER_RANK, VIEWS, 5, generator=generator, dtype=torch.float64)


def _loss_and_grads(
    model: nn.Module, case: Case, x: torch.Tensor, labels: torch.Tensor, gather: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    loss = case(model(x), labels, gather)
    loss.backward()
    return loss.detach(), [
        p.grad.detach().clone() for p in model.parameters() if p.grad is not None
    ]


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=timedelta(seconds=60),
    )
    try:
        assert distributed.rank_and_world_size() == (rank, WORLD_SIZE)
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        results = {}
        for name, (case, labels) in _cases().items():
            model = DistributedDataParallel(_model())
            results[name] = _loss_and_grads(model, case, _inputs()[rows], labels[rows], True)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]


@pytest.mark.distributed
@pytest.mark.xdist_group("distributed")
@pytest.mark.parametrize("name", sorted(_cases()))
def test_ddp_gather_equals_single_process(name: str, rank_results: list[dict[str, object]]) -> None:
    case, labels = _cases()[name]
    expected_loss, expected_grads = _loss_and_grads(_model(), case, _inputs(), labels, False)
    losses = [results[name][0] for results in rank_results]  # type: ignore[index]
    torch.testing.assert_close(torch.stack(losses).mean(), expected_loss, rtol=1e-6, atol=1e-12)
    for results in rank_results:
        grads = results[name][1]  # type: ignore[index]
        assert len(grads) == len(expected_grads)
        for grad, expected in zip(grads, expected_grads):
            torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-12)


@pytest.mark.distributed
@pytest.mark.xdist_group("distributed")
def test_ignore_case_has_different_anchor_counts_per_rank() -> None:
    # The premise of the "supcon-ignore" cases: the ranks' own anchors with a
    # positive differ in number (2 on rank 0, 4 on rank 1).
    counts = [
        (LABELS[r * PER_RANK : (r + 1) * PER_RANK, None] == LABELS).sum(1) - 1 for r in (0, 1)
    ]
    assert [int((c > 0).sum()) for c in counts] == [2, 4]
