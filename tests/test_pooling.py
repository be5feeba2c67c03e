"""Masked average pooling of the lesion region and its complement."""

from __future__ import annotations

import pytest
import torch

from contrast_attn import MaskedAveragePool
from contrast_attn.functional import masked_average_pool, resize_mask


def reference_pool(
    features: torch.Tensor, weight: torch.Tensor
) -> tuple[list[list[float]], list[list[float]], list[float]]:
    """Float64 loop: weighted means over w and 1 - w of [C, H, W] features, per image."""
    lesion, background, areas = [], [], []
    for f, w in zip(features.tolist(), weight.tolist()):
        cells = [(i, j) for i in range(len(w)) for j in range(len(w[0]))]
        mass_in = sum(w[i][j] for i, j in cells)
        mass_out = sum(1 - w[i][j] for i, j in cells)
        lesion.append(
            [sum(w[i][j] * fc[i][j] for i, j in cells) / mass_in if mass_in else 0.0 for fc in f]
        )
        background.append(
            [
                sum((1 - w[i][j]) * fc[i][j] for i, j in cells) / mass_out if mass_out else 0.0
                for fc in f
            ]
        )
        areas.append(mass_in / len(cells))
    return lesion, background, areas


def test_pool_equals_reference_loop_with_fractional_coverage() -> None:
    features = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    mask = torch.zeros(3, 1, 13, 16, dtype=torch.float64)
    mask[0, :, 2:9, 3:11] = 1
    mask[1] = torch.rand(1, 13, 16, dtype=torch.float64)  # soft mask
    pooled = masked_average_pool(features, mask)
    lesion, background, areas = reference_pool(features, resize_mask(mask, (5, 6))[:, 0])
    dtype = torch.float64
    torch.testing.assert_close(pooled.lesion, torch.tensor(lesion, dtype=dtype))
    torch.testing.assert_close(pooled.background, torch.tensor(background, dtype=dtype))
    torch.testing.assert_close(pooled.lesion_area, torch.tensor(areas, dtype=dtype))
    torch.testing.assert_close(pooled.background_area, 1 - pooled.lesion_area)
    # Image 2 has no lesion: zero vector and area 0; its background is the global mean.
    assert bool((pooled.lesion[2] == 0).all()) and pooled.lesion_area[2].item() == 0
    torch.testing.assert_close(pooled.background[2], features[2].mean(dim=(1, 2)))


def test_full_mask_has_empty_background_and_zero_gradient_there() -> None:
    features = torch.randn(2, 3, 4, 4, requires_grad=True)
    pooled = masked_average_pool(features, torch.ones(2, 8, 8, dtype=torch.bool))
    torch.testing.assert_close(pooled.lesion, features.mean(dim=(2, 3)))
    assert bool((pooled.background == 0).all())
    assert bool((pooled.background_area == 0).all())
    pooled.background.sum().backward()
    assert features.grad is not None and bool((features.grad == 0).all())


def test_gradcheck() -> None:
    features = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(2, 1, 5, 7, dtype=torch.float64)
    mask[1] = 0
    assert torch.autograd.gradcheck(
        lambda f: masked_average_pool(f, mask)[:2], (features,), check_undefined_grad=False
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_sums_in_float32(dtype: torch.dtype) -> None:
    features = torch.randn(2, 8, 7, 7) * 100
    mask = torch.zeros(2, 224, 224)
    mask[:, 32:200, 16:120] = 1
    with torch.autocast(device_type="cpu", dtype=dtype):
        pooled = masked_average_pool(features.to(dtype), mask)
    assert pooled.lesion.dtype == torch.float32
    exact = masked_average_pool(features, mask)
    torch.testing.assert_close(pooled.lesion, exact.lesion, rtol=1e-2, atol=0.5)
    torch.testing.assert_close(pooled.background, exact.background, rtol=1e-2, atol=0.5)


def test_module_matches_function() -> None:
    features, mask = torch.randn(2, 3, 4, 4), torch.rand(2, 1, 4, 4)
    for got, expected in zip(
        MaskedAveragePool()(features, mask), masked_average_pool(features, mask)
    ):
        assert torch.equal(got, expected)


F4 = torch.randn(2, 3, 4, 4)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: masked_average_pool(F4[0], torch.ones(2, 4, 4)), ValueError, r"features must have shape \[B, C, H, W\]"),
        (lambda: masked_average_pool(F4.long(), torch.ones(2, 4, 4)), TypeError, "features must be a floating"),
        (lambda: masked_average_pool(F4, torch.ones(2, 2, 4, 4)), ValueError, r"mask must have shape \[B, 1, h, w\] or \[B, h, w\]"),
        (lambda: masked_average_pool(F4, torch.ones(3, 4, 4)), ValueError, "same batch size"),
        (lambda: masked_average_pool(F4, torch.full((2, 4, 4), 1.5)), ValueError, r"mask must hold values in \[0, 1\]"),
        (lambda: masked_average_pool(F4, [[0.0]]), TypeError, "mask must be a torch.Tensor"),
        (lambda: masked_average_pool(F4 / 0, torch.ones(2, 4, 4)), ValueError, "features must be finite"),
    ],
)  # fmt: skip
def test_bad_input_raises_clear_error(call, error: type[Exception], message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        call()
