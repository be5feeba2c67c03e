"""Two gloo ranks with ``gather=True`` against one process on the whole batch.

A test module lists its cases in a function ``ddp_cases()`` that returns
``{name: (case, labels)}``, where ``case(z [B, V, D], labels, gather)`` is a loss
of this process's embeddings. :func:`run_on_ranks` spawns two ranks that each run
every case on their half of a fixed global batch through a small model wrapped in
``DistributedDataParallel``; :func:`assert_matches_single_process` checks that the
mean of the ranks' losses and every rank's (DDP-averaged) gradients are those of
one process on the concatenated batch. :func:`ddp_test` makes the module's test of all
its cases (the ranks are spawned once per module).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tests._dist import spawn_ranks

WORLD_SIZE = 2
PER_RANK = 4
VIEWS = 2

Case = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]
Cases = dict[str, tuple[Case, torch.Tensor]]


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6)).double()


def inputs() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(WORLD_SIZE * PER_RANK, VIEWS, 5, generator=generator, dtype=torch.float64)


def loss_and_grads(
    net: nn.Module, case: Case, x: torch.Tensor, labels: torch.Tensor, gather: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    loss = case(net(x), labels, gather)
    loss.backward()
    return loss.detach(), [p.grad.detach().clone() for p in net.parameters() if p.grad is not None]


def init_gloo(rank: int, port: int) -> None:
    """Join the two-rank gloo group on 127.0.0.1:``port`` (one thread per rank)."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=timedelta(seconds=60),
    )


def _worker(rank: int, port: int, out_dir: str, module: str) -> None:
    init_gloo(rank, port)
    try:
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        cases: Cases = importlib.import_module(module).ddp_cases()
        results = {
            name: loss_and_grads(
                DistributedDataParallel(model()), case, inputs()[rows], labels[rows], True
            )
            for name, (case, labels) in cases.items()
        }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_on_ranks(module: str, out_dir: Path) -> list[dict[str, object]]:
    """Run ``module.ddp_cases()`` on two gloo ranks; return each rank's results."""
    return spawn_ranks(_worker, out_dir, module, world_size=WORLD_SIZE)


def assert_matches_single_process(
    rank_results: list[dict[str, object]], name: str, case: Case, labels: torch.Tensor
) -> None:
    expected_loss, expected_grads = loss_and_grads(model(), case, inputs(), labels, False)
    losses = [results[name][0] for results in rank_results]  # type: ignore[index]
    torch.testing.assert_close(torch.stack(losses).mean(), expected_loss, rtol=1e-6, atol=1e-12)
    for results in rank_results:
        grads = results[name][1]  # type: ignore[index]
        assert len(grads) == len(expected_grads)
        for grad, expected in zip(grads, expected_grads):
            torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-12)


_RESULTS: dict[str, list[dict[str, object]]] = {}


def ddp_test(module: str) -> Callable[..., None]:
    """The test ``test_ddp_gather_equals_single_process`` over ``module.ddp_cases()``."""
    cases: Cases = importlib.import_module(module).ddp_cases()

    @pytest.mark.distributed
    @pytest.mark.xdist_group("distributed")
    @pytest.mark.parametrize("name", sorted(cases))
    def test_ddp_gather_equals_single_process(
        name: str, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        if module not in _RESULTS:
            _RESULTS[module] = run_on_ranks(module, tmp_path_factory.mktemp("ddp"))
        case, labels = cases[name]
        assert_matches_single_process(_RESULTS[module], name, case, labels)

    return test_ddp_gather_equals_single_process
