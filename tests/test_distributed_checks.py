"""Ranks that disagree on shapes or dtypes: the same ValueError on every rank, no hang.

Two gloo ranks (CPU) call the gathering functions and the losses with
``gather=True`` on inputs that differ between the ranks where the operation
cannot support it (batch sizes of NT-Xent/SupCon, dtypes, trailing shapes);
every rank must raise a ValueError naming the rank and the shapes, and the
group must still work afterwards (no rank is left inside a collective).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from contrast_attn import distributed
from contrast_attn.functional import contrastive_feature_regularizer, nt_xent_loss, supcon_loss
from tests._dist import spawn_ranks

WORLD_SIZE = 2


def _cases(rank: int) -> dict[str, object]:
    """name -> a callable that should raise on every rank (or return, for 'ok' cases)."""
    batch = 4 if rank == 0 else 3
    dtype = torch.float32 if rank == 0 else torch.float64
    width = 8 if rank == 0 else 6
    z = torch.randn(batch, 2, 8)
    features = torch.randn(batch, 5, 4, 4)
    mask = torch.zeros(batch, 1, 4, 4)
    mask[:, :, :2] = 1
    return {
        "gather_with_grad batch": lambda: distributed.gather_with_grad(torch.ones(batch, 3)),
        "gather_with_grad dtype": lambda: distributed.gather_with_grad(
            torch.ones(4, 3, dtype=dtype)
        ),
        "gather_variable_with_grad dtype": lambda: distributed.gather_variable_with_grad(
            torch.ones(batch, 3, dtype=dtype)
        ),
        "gather_variable_with_grad width": lambda: distributed.gather_variable_with_grad(
            torch.ones(batch, width)
        ),
        "nt_xent batch": lambda: nt_xent_loss(z, gather=True),
        "supcon batch": lambda: supcon_loss(z, torch.arange(batch) % 2, gather=True),
        "nt_xent dtype": lambda: nt_xent_loss(torch.randn(4, 2, 8, dtype=dtype), gather=True),
        # Supported: the regulariser gathers a different number of rows per rank.
        "ok regularizer batch": lambda: contrastive_feature_regularizer(
            features, mask, torch.arange(batch) % 2, gather=True
        ),
        "ok gather_variable_with_grad batch": lambda: distributed.gather_variable_with_grad(
            torch.ones(batch, 3)
        ),
    }


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=timedelta(seconds=30),
    )
    try:
        results: dict[str, str] = {}
        for name, call in _cases(rank).items():
            try:
                call()  # type: ignore[operator]
                results[name] = "returned"
            except ValueError as error:
                results[name] = f"ValueError: {error}"
            except Exception as error:  # recorded for the assertion
                results[name] = f"{type(error).__name__}: {error}"
        # The group still works: every rank left the collectives together.
        total = distributed.all_reduce_sum(torch.tensor(1))
        results["after"] = str(int(total))
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    out_dir = tmp_path_factory.mktemp("ddp_checks")
    return spawn_ranks(_worker, out_dir, world_size=WORLD_SIZE)


@pytest.mark.distributed
@pytest.mark.xdist_group("distributed")
@pytest.mark.parametrize("name", [n for n in _cases(0) if not n.startswith("ok")])
def test_mismatch_raises_on_every_rank(name: str, rank_results: list[dict[str, str]]) -> None:
    messages = [results[name] for results in rank_results]
    assert messages[0] == messages[1], messages
    assert messages[0].startswith("ValueError: tensor must have the same"), messages[0]
    assert "rank 0: shape" in messages[0] and "rank 1: shape" in messages[0]


@pytest.mark.distributed
@pytest.mark.xdist_group("distributed")
@pytest.mark.parametrize("name", [n for n in _cases(0) if n.startswith("ok")])
def test_supported_differences_pass(name: str, rank_results: list[dict[str, str]]) -> None:
    assert [results[name] for results in rank_results] == ["returned"] * WORLD_SIZE


@pytest.mark.distributed
@pytest.mark.xdist_group("distributed")
def test_group_still_works_after_the_errors(rank_results: list[dict[str, str]]) -> None:
    assert [results["after"] for results in rank_results] == [str(WORLD_SIZE)] * WORLD_SIZE
