"""Reference lesion/background embeddings for the contrastive feature regulariser,
explicit (``ref_features``, ``ref_labels``, ``ref_kind``) or from a memory queue."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrast_attn import ContrastiveFeatureRegularizer, MemoryQueue
from contrast_attn.functional import contrastive_feature_regularizer, masked_average_pool
from tests import _ddp_cases

TAU = 0.4


def _images(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(5, 4, 3, 3, generator=generator, dtype=torch.float64)
    mask = torch.zeros(5, 1, 3, 3, dtype=torch.float64)
    mask[0, :, :2, :2] = 1
    mask[1, :, 1:, :] = 1
    mask[2, :, :, :1] = 1
    mask[3] = 1  # all lesion: no background embedding
    labels = torch.tensor([0, 1, 0, 1, 0])  # image 4: no lesion
    return features, mask, labels


def _refs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    refs = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    return refs, torch.tensor([0, 1, 1, 0, 2, 0]), torch.tensor([1, 1, 0, 0, 1, -1])


def _reference(features, mask, labels, refs, ref_labels, ref_kind, variant="out") -> float:
    """Anchors: lesion embeddings; keys: every other lesion/background embedding and the refs."""
    lesion, background, *_ = masked_average_pool(features, mask)
    area = mask.mean(dim=(1, 2, 3))
    keys = []  # (embedding, class or None for background, is this image's lesion)
    for b in range(features.shape[0]):
        if area[b] > 0:
            keys.append((F.normalize(lesion[b], dim=0), int(labels[b]), b))
        if area[b] < 1:
            keys.append((F.normalize(background[b], dim=0), None, None))
    for r in range(refs.shape[0]):
        if ref_kind[r] >= 0:
            label = int(ref_labels[r]) if ref_kind[r] == 1 else None
            keys.append((F.normalize(refs[r], dim=0), label, None))
    total, count = 0.0, 0
    for anchor, label, image in keys:
        if image is None:
            continue
        sims = [(float(anchor @ k) / TAU, y == label) for k, y, b in keys if b != image]
        denom = sum(math.exp(s) for s, _ in sims)
        pos = [s for s, p in sims if p]
        if not pos:
            continue
        if variant == "out":
            total += -sum(s - math.log(denom) for s in pos) / len(pos)
        else:
            total += -math.log(sum(math.exp(s) for s in pos) / (len(pos) * denom))
        count += 1
    return total / count


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_matches_loop(variant: str, chunk_size: int | None) -> None:
    features, mask, labels = _images(0)
    refs, ref_labels, ref_kind = _refs(1)
    ours = contrastive_feature_regularizer(
        features,
        mask,
        labels,
        temperature=TAU,
        variant=variant,
        chunk_size=chunk_size,
        ref_features=refs,
        ref_labels=ref_labels,
        ref_kind=ref_kind,
    )
    expected = _reference(features, mask, labels, refs, ref_labels, ref_kind, variant)
    assert ours.item() == pytest.approx(expected, rel=1e-12)


def test_a_single_lesion_gets_positives_from_the_refs() -> None:
    features, mask, labels = _images(2)
    mask[1:4] = 0  # one lesion in the batch: without references the loss is 0
    refs, ref_labels, ref_kind = _refs(3)
    assert contrastive_feature_regularizer(features, mask, labels).item() == 0.0
    ours = contrastive_feature_regularizer(
        features,
        mask,
        labels,
        temperature=TAU,
        ref_features=refs,
        ref_labels=ref_labels,
        ref_kind=ref_kind,
    )
    assert ours.item() == pytest.approx(
        _reference(features, mask, labels, refs, ref_labels, ref_kind), rel=1e-12
    )


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_gradcheck_and_tiled_equals_dense(chunk_size: int | None) -> None:
    features, mask, labels = _images(4)
    refs, ref_labels, ref_kind = _refs(5)

    def loss(f: torch.Tensor, r: torch.Tensor, c: int | None = chunk_size) -> torch.Tensor:
        return contrastive_feature_regularizer(
            f,
            mask,
            labels,
            temperature=TAU,
            chunk_size=c,
            ref_features=r,
            ref_labels=ref_labels,
            ref_kind=ref_kind,
        )

    f, r = features.clone().requires_grad_(), refs.clone().requires_grad_()
    assert torch.autograd.gradcheck(loss, (f, r))
    dense = torch.autograd.grad(loss(f, r, None), (f, r))
    tiled = torch.autograd.grad(loss(f, r, 2), (f, r))
    for a, b in zip(dense, tiled):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_module_with_memory_equals_explicit_refs() -> None:
    torch.manual_seed(0)
    memory = MemoryQueue(7, 3, dtype=torch.float64, kinds=True)
    module = ContrastiveFeatureRegularizer(4, 3, temperature=TAU, memory=memory).double()
    for seed in range(3):
        features, mask, labels = _images(10 + seed)
        keys, key_labels = (t.clone() for t in memory.contents())
        kinds = memory.kinds().clone()
        expected = contrastive_feature_regularizer(
            features,
            mask,
            labels,
            temperature=TAU,
            projection=module.projection,
            ref_features=keys,
            ref_labels=key_labels,
            ref_kind=kinds,
        )
        assert module(features, mask, labels).item() == expected.item()
    # Image 3 has no background and image 4 no lesion: those rows are kept with kind -1.
    assert memory.filled == 7 and set(memory.kinds().tolist()) <= {-1, 0, 1}
    assert (memory.kinds() == -1).any()


def test_bad_refs_are_refused() -> None:
    features, mask, labels = _images(6)
    refs, ref_labels, ref_kind = _refs(7)
    with pytest.raises(ValueError, match=r"ref_kind .* is required"):
        contrastive_feature_regularizer(
            features, mask, labels, ref_features=refs, ref_labels=ref_labels
        )
    with pytest.raises(ValueError, match="ref_labels must be given exactly when labels are"):
        contrastive_feature_regularizer(
            features, mask, labels, ref_features=refs, ref_kind=ref_kind
        )
    with pytest.raises(ValueError, match="ref_kind must hold 1"):
        contrastive_feature_regularizer(
            features, mask, labels, ref_features=refs, ref_labels=ref_labels, ref_kind=ref_kind + 1
        )
    with pytest.raises(ValueError, match=r"ref_features must have shape \[R, D\] with D = 4"):
        contrastive_feature_regularizer(
            features,
            mask,
            labels,
            ref_features=refs[:, :3],
            ref_labels=ref_labels,
            ref_kind=ref_kind,
        )
    with pytest.raises(ValueError, match="need ref_features"):
        contrastive_feature_regularizer(features, mask, labels, ref_kind=ref_kind)
    with pytest.raises(TypeError, match="kinds=True"):
        ContrastiveFeatureRegularizer(4, 3, memory=MemoryQueue(3, 3))


_, REF_LABELS, REF_KIND = _refs(8)
REFS = torch.randn(6, 6, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
DDP_LABELS = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])


def ddp_cases() -> _ddp_cases.Cases:
    def regularizer(
        z: torch.Tensor, labels: torch.Tensor, gather: bool, c: int | None
    ) -> torch.Tensor:
        # Feature maps [B, 6, 1, 2] whose two pixels are the two views; lesion = pixel 0
        # where the first embedding coordinate is above 0 (the same images on the ranks
        # as in one process), else no lesion.
        features = z.transpose(1, 2)[:, :, None, :]
        mask = torch.zeros(z.shape[0], 1, 1, 2, dtype=z.dtype)
        mask[:, 0, 0, 0] = (z[:, 0, 0].detach() > 0).to(z.dtype)
        return contrastive_feature_regularizer(
            features,
            mask,
            labels,
            temperature=TAU,
            gather=gather,
            chunk_size=c,
            ref_features=REFS,
            ref_labels=REF_LABELS,
            ref_kind=REF_KIND,
        )

    return {
        f"regularizer-refs-{path}": (
            lambda z, y, g, c=chunk: regularizer(z, y, g, c),
            DDP_LABELS,
        )
        for path, chunk in (("dense", None), ("tiled", 3))
    }


test_ddp_gather_equals_single_process = _ddp_cases.ddp_test(__name__)
