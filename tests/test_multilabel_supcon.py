"""SupCon with multi-hot labels ``[B, C]``: Jaccard-weighted positives.

Checked against a float64 loop written from the formula, one-hot rows against
integer labels, by gradcheck, tiled = dense, 2-rank DDP = one process, under
fp16/bf16 autocast, with reference keys and a memory queue, and rows without a
label under each ``no_positive`` policy.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrast_attn import MemoryQueue, SupConLoss
from contrast_attn.functional import supcon_loss
from tests import _ddp_cases

SETS = torch.tensor(
    [[1, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1]]
)


def _jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    inter = int((a.bool() & b.bool()).sum())
    union = int((a.bool() | b.bool()).sum())
    return inter / union if union else 0.0


def _reference(
    features: torch.Tensor,
    sets: torch.Tensor,
    tau: float,
    variant: str = "out",
    refs: torch.Tensor | None = None,
    ref_sets: torch.Tensor | None = None,
    no_positive: str = "ignore",
) -> float:
    batch, views, _ = features.shape
    rows = [F.normalize(features[b, v], dim=0) for v in range(views) for b in range(batch)]
    row_sets = [sets[b] for _ in range(views) for b in range(batch)]
    keys, key_sets = list(rows), list(row_sets)
    if refs is not None and ref_sets is not None:
        keys += [F.normalize(r, dim=0) for r in refs]
        key_sets += list(ref_sets)
    total, count = 0.0, 0
    for i, anchor in enumerate(rows):
        sims = [
            (float(anchor @ k) / tau, _jaccard(row_sets[i], key_sets[j]))
            for j, k in enumerate(keys)
            if j != i
        ]
        denom = sum(math.exp(s) for s, _ in sims)
        weights = sum(w for _, w in sims)
        if weights == 0:
            count += no_positive == "zero"
            continue
        if variant == "out":
            total += -sum(w * (s - math.log(denom)) for s, w in sims) / weights
        else:
            total += -math.log(sum(w * math.exp(s) for s, w in sims) / (weights * denom))
        count += 1
    return total / count


def _features(seed: int, views: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(6, views, 5, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("chunk_size", [None, 4])
@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("no_positive", ["ignore", "zero"])
def test_matches_loop(variant: str, chunk_size: int | None, no_positive: str) -> None:
    features = _features(0)
    ours = supcon_loss(
        features,
        SETS,
        temperature=0.3,
        variant=variant,
        chunk_size=chunk_size,
        no_positive=no_positive,
    )
    expected = _reference(features, SETS, 0.3, variant, no_positive=no_positive)
    assert ours.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_one_view_rows_without_label(chunk_size: int | None) -> None:
    # One view: row 3 (no label) and every row whose sets overlap no other have no positive.
    features = _features(1, views=1)
    criterion = SupConLoss(0.2, chunk_size=chunk_size)
    loss = criterion(features, SETS)
    assert loss.item() == pytest.approx(_reference(features, SETS, 0.2), rel=1e-12)
    assert int(criterion.last_num_anchors_without_positives) == 1
    with pytest.raises(ValueError, match="1 of 6 anchors have no positive"):
        supcon_loss(features, SETS, no_positive="error", chunk_size=chunk_size)


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_one_hot_rows_equal_integer_labels(variant: str, chunk_size: int | None) -> None:
    features = _features(2)
    labels = torch.tensor([0, 0, 1, 2, 2, 3])
    for dtype in (torch.long, torch.bool, torch.float32):
        one_hot = F.one_hot(labels).to(dtype)
        multi = supcon_loss(features, one_hot, variant=variant, chunk_size=chunk_size)
        plain = supcon_loss(features, labels, variant=variant, chunk_size=chunk_size)
        assert multi.item() == pytest.approx(plain.item(), rel=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_tiled_equals_dense(reduction: str) -> None:
    results = []
    for chunk_size in (None, 5):
        f = _features(3, views=3).requires_grad_()
        loss = supcon_loss(
            f, SETS, reduction=reduction, chunk_size=chunk_size, hard_negative_beta=0.5
        )
        loss.sum().backward()
        results.append((loss.detach(), f.grad))
    for dense, tiled in zip(*results):
        torch.testing.assert_close(tiled, dense, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_gradcheck(chunk_size: int | None) -> None:
    features = _features(4).requires_grad_()
    refs = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    ref_sets = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]])

    def loss(f: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return supcon_loss(
            f, SETS, temperature=0.5, ref_features=r, ref_labels=ref_sets, chunk_size=chunk_size
        )

    assert torch.autograd.gradcheck(loss, (features, refs))


def test_refs_and_memory_queue() -> None:
    features = _features(5)
    generator = torch.Generator().manual_seed(6)
    refs = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    ref_sets = torch.tensor([[0, 0, 0, 1], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]])
    ours = supcon_loss(features, SETS, ref_features=refs, ref_labels=ref_sets, variant="in")
    expected = _reference(features, SETS, 0.1, "in", refs, ref_sets)
    assert ours.item() == pytest.approx(expected, rel=1e-12)
    criterion = SupConLoss(memory=MemoryQueue(10, 5, label_shape=(4,), dtype=torch.float64))
    assert criterion.memory is not None
    for seed in (7, 8, 9):
        batch = _features(seed)
        refs, ref_sets = (t.clone() for t in criterion.memory.contents())
        expected_loss = supcon_loss(batch, SETS, ref_features=refs, ref_labels=ref_sets)
        assert criterion(batch, SETS).item() == expected_loss.item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_is_finite(dtype: torch.dtype) -> None:
    features = _features(10).float().requires_grad_()
    net = torch.nn.Linear(5, 5)
    with torch.autocast("cpu", dtype=dtype):
        loss = supcon_loss(net(features), SETS.to(dtype))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert features.grad is not None and torch.isfinite(features.grad).all()


def test_bad_label_sets_are_refused() -> None:
    features = _features(11)
    with pytest.raises(ValueError, match="labels must hold only 0/1"):
        supcon_loss(features, SETS * 2)
    with pytest.raises(ValueError, match=r"labels must have shape \[B, C\] with B = 6"):
        supcon_loss(features, SETS[:5])
    with pytest.raises(ValueError, match=r"ref_labels must have shape \['R', 4\]"):
        supcon_loss(features, SETS, ref_features=features[:, 0], ref_labels=torch.zeros(6).long())
    with pytest.raises(ValueError, match="ref_labels must hold only 0/1"):
        supcon_loss(features, SETS, ref_features=features[:, 0], ref_labels=SETS * 3)


DDP_SETS = torch.tensor(
    [[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 1], [0, 0, 1], [0, 0, 0]]
)


def ddp_cases() -> _ddp_cases.Cases:
    cases: _ddp_cases.Cases = {}
    for path, chunk in (("dense", None), ("tiled", 3)):

        def multi(
            z: torch.Tensor, sets: torch.Tensor, gather: bool, c: int | None = chunk
        ) -> torch.Tensor:
            return supcon_loss(z, sets, gather=gather, chunk_size=c)

        def multi_one_view(
            z: torch.Tensor, sets: torch.Tensor, gather: bool, c: int | None = chunk
        ) -> torch.Tensor:
            return supcon_loss(z[:, 0], sets, variant="in", gather=gather, chunk_size=c)

        cases[f"multi-hot-{path}"] = (multi, DDP_SETS)
        cases[f"multi-hot-one-view-{path}"] = (multi_one_view, DDP_SETS)
    return cases


test_ddp_gather_equals_single_process = _ddp_cases.ddp_test(__name__)
