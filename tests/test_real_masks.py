"""The library's guidance and regulariser paths on radiologists' masks (public API only).

Cases picked from the COVID-19 CXR segmentations at full resolution: the smallest and the
largest lesion, a lesion touching the image border, the lesion with most disjoint
regions, and the lesion covering most of one lung. Skipped when the set is absent.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from contrast_attn import MaskGuidedAttention
from contrast_attn.functional import (
    contrastive_feature_regularizer,
    mask_guidance_loss,
    masked_average_pool,
    resize_mask,
)
from examples.deep_pneumonia.covid_cxr import (
    DEFAULT_COVID_CXR_DIR,
    DEFAULT_LESION_CLASSES,
    LUNG_CLASSES,
    full_mask,
    read_covid_cxr,
)

pytestmark = pytest.mark.skipif(
    not (DEFAULT_COVID_CXR_DIR / "structure.csv").is_file(),
    reason=f"COVID-19 CXR segmentations not found at {DEFAULT_COVID_CXR_DIR}",
)

SIZE = 256  # the batch resolution; native masks are used for resize_mask itself


def _touches_border(m: np.ndarray) -> bool:
    return bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())


@pytest.fixture(scope="module")
def cases() -> dict[str, np.ndarray]:
    records = read_covid_cxr()
    masks = [full_mask(r, DEFAULT_LESION_CLASSES) for r in records]
    lesions = [(r, m) for r, m in zip(records, masks) if m.any()]

    def lung_cover(item: tuple[object, np.ndarray]) -> float:
        record, m = item
        sides = [full_mask(record, (side,)) for side in LUNG_CLASSES]  # type: ignore[arg-type]
        return max(float((m & s).sum() / max(s.sum(), 1)) for s in sides)

    border = [(r, m) for r, m in lesions if _touches_border(m)]
    return {
        "tiny": min(lesions, key=lambda x: x[1].mean())[1],
        "huge": max(lesions, key=lambda x: x[1].mean())[1],
        "border": border[0][1],
        "disjoint": max(lesions, key=lambda x: ndimage.label(x[1])[1])[1],
        "lung": max(sorted(lesions, key=lambda x: -x[1].mean())[:10], key=lung_cover)[1],
    }


@pytest.fixture(scope="module")
def batch(cases: dict[str, np.ndarray]) -> torch.Tensor:
    """The cases area-resized to SIZE x SIZE (soft) then binarised, plus an empty mask."""
    masks = [resize_mask(torch.from_numpy(m)[None, None], (SIZE, SIZE)) for m in cases.values()]
    binary = (torch.cat(masks) >= 0.5).float()
    binary[0] = (masks[0][0] > 0).float()  # keep the tiny lesion: it is below half a pixel
    return torch.cat([binary, torch.zeros(1, 1, SIZE, SIZE)])


def test_cases_are_what_they_claim(cases: dict[str, np.ndarray]) -> None:
    assert cases["tiny"].mean() < 1e-3 < 0.3 < cases["huge"].mean()
    assert _touches_border(cases["border"])
    assert ndimage.label(cases["disjoint"])[1] >= 3


@pytest.mark.parametrize("size", [(7, 7), (13, 17), (28, 28), (64, 48)])
def test_resize_mask_conserves_mass_on_native_masks(
    cases: dict[str, np.ndarray], size: tuple[int, int]
) -> None:
    for name, m in cases.items():
        native = torch.from_numpy(m).double()[None, None]
        resized = resize_mask(native, size)
        assert resized.dtype == torch.float64, name
        assert 0.0 <= float(resized.min()) and float(resized.max()) <= 1.0, name
        torch.testing.assert_close(resized.mean(), native.mean(), rtol=1e-9, atol=1e-12)
        assert float(resized.sum()) > 0, name  # the tiny lesion survives as a fraction


@pytest.mark.parametrize("kind", ["bce", "mse", "dice"])
@pytest.mark.parametrize("grid", [8, 28])
def test_guidance_loss_finite_with_gradients(batch: torch.Tensor, kind: str, grid: int) -> None:
    logits = torch.randn(batch.shape[0], 1, grid, grid, generator=torch.Generator().manual_seed(0))
    logits.requires_grad_(True)
    for from_logits in (True, False):
        attention = logits if from_logits else torch.sigmoid(logits)
        per_image = mask_guidance_loss(
            attention, batch, kind=kind, from_logits=from_logits, reduction="none"
        )
        assert per_image.shape == (batch.shape[0],) and bool(torch.isfinite(per_image).all())
        (grad,) = torch.autograd.grad(per_image.sum(), logits)
        assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


def test_guidance_pulls_toward_real_lesions(batch: torch.Tensor) -> None:
    """The mask itself (resized by area) scores better than a uniform map, per image."""
    target = resize_mask(batch, (28, 28)).clamp(1e-4, 1 - 1e-4)
    uniform = torch.full_like(target, 0.5)
    for kind in ("bce", "mse", "dice"):
        good = mask_guidance_loss(target, batch, kind=kind, reduction="none")
        flat = mask_guidance_loss(uniform, batch, kind=kind, reduction="none")
        assert bool((good[:-1] < flat[:-1]).all()), kind


def test_masked_average_pool_matches_weighted_mean(batch: torch.Tensor) -> None:
    features = torch.randn(batch.shape[0], 5, 16, 16, dtype=torch.float64)
    pooled = masked_average_pool(features, batch)
    weights = F.avg_pool2d(batch.double(), SIZE // 16)  # a peer: sizes divide evenly
    for b in range(batch.shape[0]):
        w = weights[b, 0]
        if w.sum() > 0:
            want = (features[b] * w).sum(dim=(1, 2)) / w.sum()
            torch.testing.assert_close(pooled.lesion[b], want)
        else:
            assert float(pooled.lesion[b].abs().sum()) == 0.0
        torch.testing.assert_close(pooled.lesion_area[b].double(), w.mean(), rtol=1e-6, atol=1e-9)
        background = (features[b] * (1 - w)).sum(dim=(1, 2)) / (1 - w).sum()
        torch.testing.assert_close(pooled.background[b], background)


@pytest.mark.parametrize("grid", [7, 16])
def test_regularizer_finite_with_gradients(batch: torch.Tensor, grid: int) -> None:
    features = torch.randn(
        batch.shape[0], 8, grid, grid, generator=torch.Generator().manual_seed(1)
    )
    features.requires_grad_(True)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    for min_area in (0.0, 0.01):
        loss = contrastive_feature_regularizer(features, batch, labels, min_area=min_area)
        assert bool(torch.isfinite(loss))
        (grad,) = torch.autograd.grad(loss, features)
        assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


@pytest.mark.parametrize("residual", [True, False])
def test_attention_teacher_forcing_uses_the_resized_mask(
    batch: torch.Tensor, residual: bool
) -> None:
    torch.manual_seed(0)
    layer = MaskGuidedAttention(8, mode="hard", residual=residual, teacher_forcing=1.0).train()
    features = torch.randn(batch.shape[0], 8, 16, 16, requires_grad=True)
    attended, attention = layer(features, batch)
    gate = resize_mask(batch, (16, 16))
    want = features * (1 + gate) if residual else features * gate
    torch.testing.assert_close(attended, want)
    assert attention.shape == (batch.shape[0], 1, 16, 16)
    loss = attended.square().mean() + mask_guidance_loss(attention, batch)
    loss.backward()
    assert features.grad is not None and bool(torch.isfinite(features.grad).all())
    for p in layer.parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all())
