"""The contrastive feature regulariser: reference loop, constructed cases, numerics, errors."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from contrast_attn import ContrastiveFeatureRegularizer, ProjectionHead
from contrast_attn.functional import contrastive_feature_regularizer, resize_mask

# ---------------------------------------------------------------------------
# The reference: the docstring's formula as a float64 loop over anchors. Pooling is
# an explicit weighted mean over cells (the area-resized mask is tested elsewhere);
# the projection is applied to one vector at a time.
# ---------------------------------------------------------------------------


def reference_regularizer(
    features: torch.Tensor,
    mask: torch.Tensor,
    labels: list[int] | None,
    *,
    temperature: float,
    projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
    valid: list[bool] | None = None,
    variant: str = "out",
    min_area: float = 0.0,
) -> tuple[list[float], list[bool]]:
    """Per-image anchor losses (0 for non-anchors) and whether each image is a counted anchor."""
    batch, _, height, width = features.shape
    weight = resize_mask(mask, (height, width))[:, 0].double()
    cells = [(i, j) for i in range(height) for j in range(width)]
    project = projection if projection is not None else (lambda v: v)
    lesion_ids, background_ids, z, n = [], [], {}, {}
    for b in range(batch):
        if valid is not None and not valid[b]:
            continue
        w = weight[b]
        mass_in = sum(float(w[i, j]) for i, j in cells)
        mass_out = len(cells) - mass_in
        if mass_in / len(cells) > min_area:
            u = sum(w[i, j] * features[b, :, i, j] for i, j in cells) / mass_in
            g = project(u)
            z[b] = g / g.norm()
            lesion_ids.append(b)
        if mass_out / len(cells) > min_area:
            v = sum((1 - w[i, j]) * features[b, :, i, j] for i, j in cells) / mass_out
            g = project(v)
            n[b] = g / g.norm()
            background_ids.append(b)
    classes = labels if labels is not None else [0] * batch
    losses, counted = [0.0] * batch, [False] * batch
    for a in lesion_ids:
        sim = {k: math.exp(float(z[a] @ z[k]) / temperature) for k in lesion_ids if k != a}
        denominator = sum(sim.values()) + sum(
            math.exp(float(z[a] @ n[j]) / temperature) for j in background_ids
        )
        positives = [p for p in lesion_ids if p != a and classes[p] == classes[a]]
        if not positives:
            continue
        ratios = [sim[p] / denominator for p in positives]
        if variant == "out":
            losses[a] = -sum(math.log(r) for r in ratios) / len(positives)
        else:
            losses[a] = -math.log(sum(ratios) / len(positives))
        counted[a] = True
    return losses, counted


def lesion_batch(batch: int = 6, size: int = 20) -> torch.Tensor:
    """[B, 1, size, size] masks: rectangles of different sizes; image 4 has no lesion."""
    mask = torch.zeros(batch, 1, size, size, dtype=torch.float64)
    for b in range(batch):
        if b == 4:
            continue
        mask[b, :, b : b + 6 + b, 2 * b % 9 : 2 * b % 9 + 7] = 1
    return mask


LABELS = [0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("labelled", [True, False])
def test_equals_reference_loop(variant: str, labelled: bool) -> None:
    features = torch.randn(6, 5, 4, 4, dtype=torch.float64)
    mask = lesion_batch()
    labels = LABELS if labelled else None
    losses, counted = reference_regularizer(
        features, mask, labels, temperature=0.3, variant=variant
    )
    tensor_labels = torch.tensor(labels) if labels is not None else None
    for reduction in ("mean", "sum", "none"):
        loss = contrastive_feature_regularizer(
            features, mask, tensor_labels, temperature=0.3, variant=variant, reduction=reduction
        )
        per_image = torch.tensor(losses, dtype=torch.float64)
        expected = {
            "none": per_image,
            "sum": per_image.sum(),
            "mean": per_image.sum() / sum(counted),
        }[reduction]
        torch.testing.assert_close(loss, expected)


def test_equals_reference_with_projection_valid_and_min_area() -> None:
    features = torch.randn(6, 5, 3, 3, dtype=torch.float64)
    mask = lesion_batch()
    mask[5] = 0
    mask[5, :, :2, :2] = 1  # a tiny lesion (1 % of the image) that min_area drops
    projection = torch.nn.Linear(5, 4).double()
    valid = [True, True, False, True, True, True]
    with torch.no_grad():
        losses, counted = reference_regularizer(
            features, mask, LABELS, temperature=0.2, projection=projection, valid=valid,
            min_area=0.05,
        )  # fmt: skip
        loss = contrastive_feature_regularizer(
            features, mask, torch.tensor(LABELS), temperature=0.2, projection=projection,
            valid=torch.tensor(valid), min_area=0.05,
        )  # fmt: skip
    torch.testing.assert_close(loss, torch.tensor(sum(losses) / sum(counted), dtype=torch.float64))
    assert counted == [False, True, False, True, False, False]  # 0: positives 2, 4 are out


def test_images_without_lesion_are_only_negatives() -> None:
    features = torch.randn(6, 5, 4, 4, dtype=torch.float64)
    mask = lesion_batch()
    labels = torch.tensor(LABELS)
    per_image = contrastive_feature_regularizer(features, mask, labels, reduction="none")
    assert per_image[4].item() == 0.0  # image 4 is no anchor
    # Dropping image 4 (its whole-image background negative) lowers every anchor's loss.
    keep = torch.tensor([0, 1, 2, 3, 5])
    without = contrastive_feature_regularizer(
        features[keep], mask[keep], labels[keep], reduction="none"
    )
    assert bool((without < per_image[keep]).all())


def test_lower_when_lesions_of_a_class_cluster_apart_from_background() -> None:
    # A constructed case: inside the lesions the features are a class prototype plus
    # small noise, outside they point elsewhere. Mixing the two regions' features
    # (the same statistics, no lesion structure) must give a higher loss.
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn(2, 16, generator=generator) * 3
    background = torch.randn(16, generator=generator) * 3
    mask = lesion_batch(8, 16).float()
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    weight = resize_mask(mask, (8, 8))
    noise = torch.randn(8, 16, 8, 8, generator=generator) * 0.3
    lesion_part = prototypes[labels][:, :, None, None]
    clustered = weight * lesion_part + (1 - weight) * background[None, :, None, None] + noise
    shuffled = clustered.flatten(2)[:, :, torch.randperm(64, generator=generator)].view_as(
        clustered
    )
    good = contrastive_feature_regularizer(clustered, mask, labels)
    bad = contrastive_feature_regularizer(shuffled, mask, labels)
    assert good.item() < 0.5 * bad.item(), (good.item(), bad.item())


@pytest.mark.parametrize(
    "mask",
    [
        torch.zeros(4, 1, 9, 9),  # no lesion pixel in the whole batch
        torch.cat([torch.ones(1, 1, 9, 9), torch.zeros(3, 1, 9, 9)]),  # a single lesion
    ],
)
def test_fewer_than_two_lesions_give_zero_attached_to_the_graph(mask: torch.Tensor) -> None:
    features = torch.randn(4, 8, 3, 3, requires_grad=True)
    head = ProjectionHead(8, out_features=4)
    loss = contrastive_feature_regularizer(features, mask, projection=head)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert features.grad is not None and bool((features.grad == 0).all())
    none = contrastive_feature_regularizer(features, mask, reduction="none")
    assert none.shape == (4,) and bool((none == 0).all())
    invalid = contrastive_feature_regularizer(
        features, torch.ones(4, 9, 9), valid=torch.zeros(4, dtype=torch.bool)
    )
    assert invalid.item() == 0.0


def test_zero_result_still_gives_the_head_a_gradient() -> None:
    # DistributedDataParallel waits for a gradient of every parameter: a batch without
    # two lesions must not leave the projection head out of the graph.
    regularizer = ContrastiveFeatureRegularizer(8, projection_dim=4)
    features = torch.randn(3, 8, 4, 4, requires_grad=True)
    loss = regularizer(features, torch.zeros(3, 1, 8, 8))
    assert loss.item() == 0.0 and int(regularizer.last_num_anchors) == 0
    loss.backward()
    for parameter in regularizer.parameters():
        assert parameter.grad is not None and bool((parameter.grad == 0).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_without_autocast(dtype: torch.dtype) -> None:
    # A model cast with .to(dtype) once failed: float32 pooled vectors met a half head.
    regularizer = ContrastiveFeatureRegularizer(8, projection_dim=4, temperature=0.5)
    features = torch.randn(6, 8, 4, 4)
    mask, labels = lesion_batch().float(), torch.tensor(LABELS)
    exact = regularizer(features, mask, labels)
    low = regularizer.to(dtype)(features.to(dtype).requires_grad_(), mask, labels)
    assert low.dtype == torch.float32 and torch.isfinite(low)
    torch.testing.assert_close(low, exact, rtol=0.05, atol=0.05)
    low.backward()
    assert all(torch.isfinite(p.grad).all() for p in regularizer.parameters() if p.grad is not None)


def test_gradcheck_with_and_without_projection() -> None:
    features = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    mask = lesion_batch(4, 9)
    weight = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    assert torch.autograd.gradcheck(
        lambda f: contrastive_feature_regularizer(f, mask, labels, temperature=0.5), (features,)
    )
    assert torch.autograd.gradcheck(
        lambda f, w: contrastive_feature_regularizer(
            f, mask, temperature=0.5, projection=lambda v: v @ w.T, variant="in"
        ),
        (features, weight),
    )


def test_tiled_kernel_equals_dense() -> None:
    features = torch.randn(6, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    mask, labels = lesion_batch(), torch.tensor(LABELS)
    dense = contrastive_feature_regularizer(features, mask, labels)
    tiled = contrastive_feature_regularizer(features, mask, labels, chunk_size=2)
    torch.testing.assert_close(tiled, dense)
    (dense_grad,) = torch.autograd.grad(dense, features)
    (tiled_grad,) = torch.autograd.grad(tiled, features)
    torch.testing.assert_close(tiled_grad, dense_grad)


@given(st.integers(0, 50), st.floats(0.05, 1.0))
def test_finite_and_nonnegative(seed: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(5, 4, 3, 3, generator=generator) * 10
    mask = (torch.rand(5, 1, 6, 6, generator=generator) > 0.7).float()
    labels = torch.randint(0, 2, (5,), generator=generator)
    loss = contrastive_feature_regularizer(features, mask, labels, temperature=temperature)
    assert torch.isfinite(loss) and loss.item() >= 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_low_precision_is_finite_and_close(dtype: torch.dtype) -> None:
    conv = torch.nn.Conv2d(4, 32, 1)
    regularizer = ContrastiveFeatureRegularizer(32, projection_dim=16, temperature=0.05)
    images = torch.randn(8, 4, 7, 7)
    mask = lesion_batch(8, 28).float()
    labels = torch.tensor([0, 1] * 4)
    with torch.autocast(device_type="cpu", dtype=dtype):
        loss = regularizer(conv(images), mask, labels)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, regularizer(conv(images), mask, labels), rtol=0.05, atol=0.05)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in regularizer.parameters() if p.grad is not None)


def test_module_owns_the_head_and_counts_anchors() -> None:
    regularizer = ContrastiveFeatureRegularizer(8, projection_dim=4, hidden_dim=6, temperature=0.2)
    assert isinstance(regularizer.projection, ProjectionHead)
    features = torch.randn(6, 8, 4, 4)
    mask = lesion_batch().float()
    labels = torch.tensor(LABELS)
    loss = regularizer(features, mask, labels)
    expected = contrastive_feature_regularizer(
        features, mask, labels, temperature=0.2, projection=regularizer.projection
    )
    torch.testing.assert_close(loss, expected)
    assert regularizer.last_num_anchors is not None and int(regularizer.last_num_anchors) == 5
    loss.backward()
    assert all(p.grad is not None for p in regularizer.parameters())
    assert "temperature=0.2" in repr(regularizer)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gather_without_process_group_equals_no_gather(reduction: str) -> None:
    # The DDP equivalence itself is in test_distributed.py.
    assert not torch.distributed.is_available() or not torch.distributed.is_initialized()
    features = torch.randn(6, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    mask, labels = lesion_batch(), torch.tensor(LABELS)
    plain = contrastive_feature_regularizer(features, mask, labels, reduction=reduction)
    gathered = contrastive_feature_regularizer(
        features, mask, labels, reduction=reduction, gather=True
    )
    torch.testing.assert_close(gathered, plain, rtol=0, atol=0)
    (plain_grad,) = torch.autograd.grad(plain.sum(), features)
    (gathered_grad,) = torch.autograd.grad(gathered.sum(), features)
    torch.testing.assert_close(gathered_grad, plain_grad, rtol=0, atol=0)
    regularizer = ContrastiveFeatureRegularizer(5, projection_dim=3, reduction=reduction).double()
    module_plain = regularizer(features, mask, labels)
    regularizer.gather = True
    torch.testing.assert_close(regularizer(features, mask, labels), module_plain, rtol=0, atol=0)
    assert "gather=True" in repr(regularizer)


F4 = torch.randn(2, 3, 4, 4)
M4 = torch.ones(2, 1, 8, 8)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: contrastive_feature_regularizer(F4[0], M4), ValueError, r"features must have shape \[B, C, H, W\]"),
        (lambda: contrastive_feature_regularizer(F4, M4[:, 0, 0]), ValueError, r"mask must have shape \[B, 1, h, w\] or \[B, h, w\]"),
        (lambda: contrastive_feature_regularizer(F4, M4[:1]), ValueError, "same batch size"),
        (lambda: contrastive_feature_regularizer(F4, -M4), ValueError, r"mask must hold values in \[0, 1\]"),
        (lambda: contrastive_feature_regularizer(F4, M4, torch.ones(2)), TypeError, "labels must be an integer"),
        (lambda: contrastive_feature_regularizer(F4, M4, torch.ones(3, dtype=torch.long)), ValueError, r"labels must have shape \[B\]"),
        (lambda: contrastive_feature_regularizer(F4, M4, valid=torch.ones(5)), ValueError, r"valid must have shape \[B\]"),
        (lambda: contrastive_feature_regularizer(F4, M4, temperature=0.0), ValueError, "temperature must be in"),
        (lambda: contrastive_feature_regularizer(F4, M4, variant="both"), ValueError, "variant must be one of"),
        (lambda: contrastive_feature_regularizer(F4, M4, min_area=1.0), ValueError, r"min_area must be in \[0.0, 1.0\)"),
        (lambda: contrastive_feature_regularizer(F4, M4, reduction="max"), ValueError, "reduction must be"),
        (lambda: contrastive_feature_regularizer(F4, M4, projection=3), TypeError, "projection must be callable"),
        (lambda: contrastive_feature_regularizer(F4, M4, gather=1), TypeError, "gather must be a bool"),
        (lambda: ContrastiveFeatureRegularizer(3, gather="yes"), TypeError, "gather must be a bool"),
        (lambda: contrastive_feature_regularizer(F4, M4 * 0.5, projection=lambda v: v[0]), ValueError, r"projection must map pooled vectors \[M, C\]"),
        (lambda: contrastive_feature_regularizer(F4 * float("inf"), M4), ValueError, "features must be finite"),
        (lambda: ContrastiveFeatureRegularizer(4)(F4, M4), ValueError, "features must have in_channels = 4"),
        (lambda: ContrastiveFeatureRegularizer(3, temperature=-1.0), ValueError, "temperature must be in"),
    ],
)  # fmt: skip
def test_bad_input_raises_clear_error(call, error: type[Exception], message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        call()
