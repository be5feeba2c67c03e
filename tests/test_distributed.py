"""DDP with ``gather=True`` equals one process on the concatenated batch.

Two ranks (gloo, CPU) are spawned once; each runs every case on its half of a
fixed global batch through a small model wrapped in ``DistributedDataParallel``
and saves its loss and the (DDP-averaged) parameter gradients. The test then
checks, in float64 to 1e-6, that the mean of the ranks' losses is the loss of
one process on the whole batch and that every rank holds that process's
parameter gradients. The contrastive feature regulariser is checked the same way,
with per-rank numbers of lesion and background embeddings that differ (a rank
with no lesion, a rank with no valid image, no lesion anywhere).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from contrast_attn import distributed
from contrast_attn.functional import (
    contrastive_feature_regularizer,
    nt_xent_loss,
    supcon_loss,
)
from tests._dist import spawn_ranks

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


# Regulariser cases: which of the 8 global images have a lesion, their labels (or None),
# which are annotated (or None), and options. Rank 0 holds images 0-3, rank 1 images 4-7.
RegularizerCase = tuple[list[int], Optional[torch.Tensor], Optional[torch.Tensor], dict[str, Any]]
REGULARIZER_CASES: dict[str, RegularizerCase] = {
    # Rank 1 has no lesion: it contributes 0 and its backgrounds as negatives.
    "rank1-no-lesion": ([0, 1, 2], torch.tensor([0, 1, 0, 1, 0, 1, 0, 1]), None, {}),
    # A single lesion on rank 0 (fewer than 2 locally, 4 globally); tiled kernel.
    "one-local-lesion-tiled": ([1, 4, 5, 7], None, None, {"variant": "in", "chunk_size": TILE}),
    # Rank 0 has no valid image at all: no row to gather.
    "rank0-nothing-valid": (
        [0, 2, 3, 4, 5, 6],
        torch.tensor([0, 0, 1, 1, 0, 1, 1, 0]),
        torch.tensor([False] * 4 + [True] * 4),
        {"min_area": 0.05},
    ),
    # No lesion in the whole global batch: 0 on every rank.
    "no-lesion-anywhere": ([], None, None, {}),
}


class _RegularizerModel(nn.Module):
    """A 1x1 convolution feature map, a linear projection head, the regulariser."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 1).double()
        self.head = nn.Linear(5, 4).double()
        self.options = options

    def forward(
        self,
        images: torch.Tensor,
        mask: torch.Tensor,
        labels: torch.Tensor | None,
        valid: torch.Tensor | None,
        gather: bool,
    ) -> torch.Tensor:
        return contrastive_feature_regularizer(
            self.conv(images),
            mask,
            labels,
            temperature=0.5,
            projection=self.head,
            valid=valid,
            gather=gather,
            **self.options,
        )


def _regularizer_inputs(lesions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Global images ``[8, 3, 4, 4]`` and masks ``[8, 1, 8, 8]`` with lesions of varied size."""
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(WORLD_SIZE * PER_RANK, 3, 4, 4, generator=generator, dtype=torch.float64)
    mask = torch.zeros(WORLD_SIZE * PER_RANK, 1, 8, 8, dtype=torch.float64)
    for b in lesions:
        mask[b, :, b % 4 : b % 4 + 3 + b % 3, 1 : 5 + b % 2] = 1
    return images, mask


def _regularizer_loss_and_grads(
    model: nn.Module, name: str, rows: slice, gather: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    lesions, labels, valid, _ = REGULARIZER_CASES[name]
    images, mask = _regularizer_inputs(lesions)
    loss = model(
        images[rows],
        mask[rows],
        None if labels is None else labels[rows],
        None if valid is None else valid[rows],
        gather,
    )
    return _backward(model, loss)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6)).double()


def _inputs() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(WORLD_SIZE * PER_RANK, VIEWS, 5, generator=generator, dtype=torch.float64)


def _loss_and_grads(
    model: nn.Module, case: Case, x: torch.Tensor, labels: torch.Tensor, gather: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return _backward(model, case(model(x), labels, gather))


def _backward(model: nn.Module, loss: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Back-propagate ``loss`` (the model's first backward); return it and the gradients."""
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
        for name, (*_, options) in REGULARIZER_CASES.items():
            model = DistributedDataParallel(_RegularizerModel(options))
            results[f"regularizer-{name}"] = _regularizer_loss_and_grads(model, name, rows, True)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    out_dir = tmp_path_factory.mktemp("ddp")
    return spawn_ranks(_worker, out_dir, world_size=WORLD_SIZE)


@pytest.mark.distributed
@pytest.mark.xdist_group("distributed")
@pytest.mark.parametrize("name", sorted(_cases()))
def test_ddp_gather_equals_single_process(name: str, rank_results: list[dict[str, object]]) -> None:
    case, labels = _cases()[name]
    expected_loss, expected_grads = _loss_and_grads(_model(), case, _inputs(), labels, False)
    _assert_ranks_match(rank_results, name, expected_loss, expected_grads)


def _assert_ranks_match(
    rank_results: list[dict[str, object]],
    name: str,
    expected_loss: torch.Tensor,
    expected_grads: list[torch.Tensor],
) -> None:
    losses = [results[name][0] for results in rank_results]  # type: ignore[index]
    torch.testing.assert_close(torch.stack(losses).mean(), expected_loss, rtol=1e-6, atol=1e-12)
    for results in rank_results:
        grads = results[name][1]  # type: ignore[index]
        assert len(grads) == len(expected_grads)
        for grad, expected in zip(grads, expected_grads):
            torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-12)


@pytest.mark.distributed
@pytest.mark.xdist_group("distributed")
@pytest.mark.parametrize("name", sorted(REGULARIZER_CASES))
def test_ddp_gathered_regularizer_equals_single_process(
    name: str, rank_results: list[dict[str, object]]
) -> None:
    model = _RegularizerModel(REGULARIZER_CASES[name][3])
    expected_loss, expected_grads = _regularizer_loss_and_grads(model, name, slice(None), False)
    # Every parameter gets a gradient on every rank (DDP would hang otherwise).
    assert len(expected_grads) == len(list(model.parameters()))
    _assert_ranks_match(rank_results, f"regularizer-{name}", expected_loss, expected_grads)
    if name == "no-lesion-anywhere":
        assert all(float(results[f"regularizer-{name}"][0]) == 0.0 for results in rank_results)  # type: ignore[index]
    else:
        assert expected_loss.item() > 0


@pytest.mark.distributed
@pytest.mark.xdist_group("distributed")
def test_regularizer_cases_cover_the_edge_cases() -> None:
    # Lesion embeddings per rank: none on one rank, one on a rank, none valid on a rank.
    per_rank = {}
    for name, (lesions, _, valid, _) in REGULARIZER_CASES.items():
        counted = [b for b in lesions if valid is None or bool(valid[b])]
        per_rank[name] = [
            sum(r * PER_RANK <= b < (r + 1) * PER_RANK for b in counted) for r in (0, 1)
        ]
    assert per_rank == {
        "rank1-no-lesion": [3, 0],
        "one-local-lesion-tiled": [1, 3],
        "rank0-nothing-valid": [0, 3],
        "no-lesion-anywhere": [0, 0],
    }


@pytest.mark.distributed
@pytest.mark.xdist_group("distributed")
def test_ignore_case_has_different_anchor_counts_per_rank() -> None:
    # The premise of the "supcon-ignore" cases: the ranks' own anchors with a
    # positive differ in number (2 on rank 0, 4 on rank 1).
    counts = [
        (LABELS[r * PER_RANK : (r + 1) * PER_RANK, None] == LABELS).sum(1) - 1 for r in (0, 1)
    ]
    assert [int((c > 0).sum()) for c in counts] == [2, 4]
