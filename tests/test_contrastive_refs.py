"""Keys that are not anchors (``ref_features``, ``ref_labels``) for SupCon and NT-Xent.

Checked against a float64 loop written from the formula (every batch row is an
anchor; its denominator runs over every other batch row and every reference key;
its positives are the other rows and reference keys of its label), by gradcheck,
tiled = dense, 2-rank DDP = one process, and under fp16/bf16 autocast.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrast_attn.functional import nt_xent_loss, supcon_loss
from tests import _ddp_cases

TAU = 0.3


def _reference(
    features: torch.Tensor,
    labels: torch.Tensor | None,
    refs: torch.Tensor,
    ref_labels: torch.Tensor | None,
    tau: float,
    variant: str = "out",
) -> float:
    """Mean over anchors with a positive; without labels the positives are the other views."""
    batch, views, _ = features.shape
    rows = [F.normalize(features[b, v], dim=0) for v in range(views) for b in range(batch)]
    row_label = [
        int(labels[b]) if labels is not None else b for v in range(views) for b in range(batch)
    ]
    keys = rows + [F.normalize(r, dim=0) for r in refs]
    key_label = row_label + [
        int(ref_labels[r]) if ref_labels is not None else -1 for r in range(refs.shape[0])
    ]
    total, count = 0.0, 0
    for i, anchor in enumerate(rows):
        sims = {j: float(anchor @ key) / tau for j, key in enumerate(keys) if j != i}
        denom = sum(math.exp(s) for s in sims.values())
        pos = [s for j, s in sims.items() if key_label[j] == row_label[i]]
        if not pos:
            continue
        if variant == "out":
            total += -sum(s - math.log(denom) for s in pos) / len(pos)
        else:
            total += -math.log(sum(math.exp(s) for s in pos) / (len(pos) * denom))
        count += 1
    return total / count


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(6, 2, 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2, 2, 3])
    refs = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    ref_labels = torch.tensor([0, 1, 4, 4, 3, 2, 1])
    return features, labels, refs, ref_labels


@pytest.mark.parametrize("chunk_size", [None, 4])
@pytest.mark.parametrize("variant", ["out", "in"])
def test_supcon_with_refs_matches_loop(variant: str, chunk_size: int | None) -> None:
    features, labels, refs, ref_labels = _data()
    ours = supcon_loss(
        features,
        labels,
        temperature=TAU,
        variant=variant,
        ref_features=refs,
        ref_labels=ref_labels,
        chunk_size=chunk_size,
    )
    expected = _reference(features, labels, refs, ref_labels, TAU, variant)
    assert ours.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_one_view_with_refs_gives_positives_from_refs(chunk_size: int | None) -> None:
    # With V = 1, class 3 has no positive in the batch but one among the reference keys.
    features, labels, refs, ref_labels = _data(1)
    one_view = features[:, :1]
    ours = supcon_loss(
        one_view, labels, ref_features=refs, ref_labels=ref_labels, chunk_size=chunk_size
    )
    assert ours.item() == pytest.approx(
        _reference(one_view, labels, refs, ref_labels, 0.1), rel=1e-12
    )


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_nt_xent_refs_are_extra_negatives(chunk_size: int | None) -> None:
    features, _, refs, _ = _data(2)
    ours = nt_xent_loss(features, temperature=TAU, ref_features=refs, chunk_size=chunk_size)
    assert ours.item() == pytest.approx(_reference(features, None, refs, None, TAU), rel=1e-12)
    z1, z2 = features.unbind(1)
    assert nt_xent_loss(z1, z2, temperature=TAU, ref_features=refs).item() == pytest.approx(
        ours.item(), rel=1e-12
    )
    # SupCon without labels is NT-Xent, with references too.
    same = supcon_loss(features, temperature=TAU, ref_features=refs, chunk_size=chunk_size)
    assert same.item() == pytest.approx(ours.item(), rel=1e-12)


def test_no_refs_and_empty_refs_are_todays_loss() -> None:
    features, labels, refs, ref_labels = _data(3)
    plain = supcon_loss(features, labels)
    empty = supcon_loss(features, labels, ref_features=refs[:0], ref_labels=ref_labels[:0])
    assert empty.item() == pytest.approx(plain.item(), rel=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_tiled_equals_dense_with_gradients(reduction: str) -> None:
    features, labels, refs, ref_labels = _data(4)
    results = []
    for chunk_size in (None, 3):
        f = features.clone().requires_grad_()
        r = refs.clone().requires_grad_()
        loss = supcon_loss(
            f,
            labels,
            ref_features=r,
            ref_labels=ref_labels,
            reduction=reduction,
            chunk_size=chunk_size,
        )
        loss.sum().backward()
        results.append((loss.detach(), f.grad, r.grad))
    for dense, tiled in zip(*results):
        torch.testing.assert_close(tiled, dense, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_gradcheck_features_and_refs(chunk_size: int | None) -> None:
    features, labels, refs, ref_labels = _data(5)
    features = features[:4].requires_grad_()
    refs = refs[:3].requires_grad_()

    def supcon(f: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return supcon_loss(
            f,
            labels[:4],
            ref_features=r,
            ref_labels=ref_labels[:3],
            temperature=0.5,
            chunk_size=chunk_size,
        )

    def ntxent(f: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return nt_xent_loss(f, ref_features=r, chunk_size=chunk_size)

    assert torch.autograd.gradcheck(supcon, (features, refs))
    assert torch.autograd.gradcheck(ntxent, (features, refs))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_is_finite_and_close(dtype: torch.dtype) -> None:
    features, labels, refs, ref_labels = _data(6)
    features = features.float().requires_grad_()
    net = torch.nn.Linear(5, 5)
    with torch.autocast("cpu", dtype=dtype):
        z = net(features)
        loss = supcon_loss(z, labels, ref_features=net(refs.float()), ref_labels=ref_labels)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert features.grad is not None and torch.isfinite(features.grad).all()
    with torch.no_grad():
        exact = supcon_loss(
            net(features), labels, ref_features=net(refs.float()), ref_labels=ref_labels
        )
    assert loss.item() == pytest.approx(exact.item(), rel=0.05)


def test_bad_refs_are_refused() -> None:
    features, labels, refs, ref_labels = _data(7)
    with pytest.raises(ValueError, match="ref_labels must be given exactly when labels"):
        supcon_loss(features, labels, ref_features=refs)
    with pytest.raises(ValueError, match="ref_labels must be given exactly when labels"):
        supcon_loss(features, ref_features=refs, ref_labels=ref_labels)
    with pytest.raises(ValueError, match="ref_labels were given without ref_features"):
        supcon_loss(features, labels, ref_labels=ref_labels)
    with pytest.raises(ValueError, match=r"ref_features must have shape \[R, D\] with D = 5"):
        supcon_loss(features, labels, ref_features=refs[:, :4], ref_labels=ref_labels)
    with pytest.raises(ValueError, match="one label per reference key"):
        supcon_loss(features, labels, ref_features=refs, ref_labels=ref_labels[:3])
    with pytest.raises(ValueError, match="not available with an explicit mask"):
        supcon_loss(features, mask=torch.eye(6, dtype=torch.bool), ref_features=refs)
    with pytest.raises(TypeError, match="ref_features must be a floating-point tensor"):
        nt_xent_loss(features, ref_features=torch.ones(3, 5, dtype=torch.long))
    bad = refs.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="ref_features must be finite"):
        nt_xent_loss(features, ref_features=bad)


# The same reference keys on every rank (as a memory queue's contents are).
REFS = torch.randn(5, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
REF_LABELS = torch.tensor([0, 1, 2, 2, 5])
DDP_LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 2, 0])


def ddp_cases() -> _ddp_cases.Cases:
    cases: _ddp_cases.Cases = {}
    for path, chunk in (("dense", None), ("tiled", 3)):

        def supcon(
            z: torch.Tensor, labels: torch.Tensor, gather: bool, c: int | None = chunk
        ) -> torch.Tensor:
            return supcon_loss(
                z, labels, ref_features=REFS, ref_labels=REF_LABELS, gather=gather, chunk_size=c
            )

        def ntxent(
            z: torch.Tensor, _: torch.Tensor, gather: bool, c: int | None = chunk
        ) -> torch.Tensor:
            return nt_xent_loss(z, ref_features=REFS, gather=gather, chunk_size=c)

        cases[f"supcon-refs-{path}"] = (supcon, DDP_LABELS)
        cases[f"ntxent-refs-{path}"] = (ntxent, DDP_LABELS)
    return cases


test_ddp_gather_equals_single_process = _ddp_cases.ddp_test(__name__)
