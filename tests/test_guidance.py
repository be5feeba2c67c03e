"""Mask resizing by area, the mask-guidance loss and the class activation map."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from contrast_attn import MaskGuidanceLoss
from contrast_attn.functional import class_activation_map, mask_guidance_loss, resize_mask

# ---------------------------------------------------------------------------
# References: exact fractional coverage with Python fractions, and plain float64
# loops over pixels written from the formulas in the docstrings.
# ---------------------------------------------------------------------------


def reference_coverage(src: int, dst: int) -> list[list[Fraction]]:
    """[dst][src]: the fraction of output cell i (of dst) lying in input cell k (of src)."""
    length = Fraction(src, dst)
    rows = []
    for i in range(dst):
        lo, hi = i * length, (i + 1) * length
        rows.append([max(Fraction(0), min(hi, k + 1) - max(lo, k)) / length for k in range(src)])
    return rows


def reference_resize(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[h, w] float64 mask → [H, W] by exact area coverage."""
    rows = reference_coverage(mask.shape[0], height)
    cols = reference_coverage(mask.shape[1], width)
    values = mask.tolist()
    out = torch.zeros(height, width, dtype=torch.float64)
    for i in range(height):
        for j in range(width):
            out[i, j] = sum(
                float(rows[i][k] * cols[j][l]) * values[k][l]
                for k in range(mask.shape[0])
                if rows[i][k]
                for l in range(mask.shape[1])  # noqa: E741
                if cols[j][l]
            )
    return out


def reference_guidance(
    prob: torch.Tensor, target: torch.Tensor, kind: str, smooth: float = 1.0
) -> torch.Tensor:
    """Per-image loss of [H, W] probabilities against [H, W] targets, float64 loop."""
    cells = [(i, j) for i in range(prob.shape[0]) for j in range(prob.shape[1])]
    if kind == "bce":
        total = 0.0
        for i, j in cells:
            a, m = float(prob[i, j]), float(target[i, j])
            total -= m * math.log(a) + (1 - m) * math.log(1 - a)
        return torch.tensor(total / len(cells), dtype=torch.float64)
    if kind == "mse":
        total = sum((float(prob[i, j]) - float(target[i, j])) ** 2 for i, j in cells)
        return torch.tensor(total / len(cells), dtype=torch.float64)
    overlap = sum(float(prob[i, j]) * float(target[i, j]) for i, j in cells)
    mass = sum(float(prob[i, j]) + float(target[i, j]) for i, j in cells)
    return torch.tensor(1 - (2 * overlap + smooth) / (mass + smooth), dtype=torch.float64)


def lesion_masks(batch: int, size: int) -> torch.Tensor:
    """Binary [B, 1, size, size] masks with one rectangle each; the last one empty."""
    mask = torch.zeros(batch, 1, size, size)
    for b in range(batch - 1):
        top, left = 2 * b % (size // 2), (3 * b + 1) % (size // 2)
        mask[b, :, top : top + size // 3, left : left + size // 2] = 1
    return mask


# ---------------------------------------------------------------------------
# Area resizing
# ---------------------------------------------------------------------------


def test_one_pixel_of_nine_covers_four_ninths_of_a_quarter() -> None:
    mask = torch.zeros(1, 3, 3)
    mask[0, 0, 0] = 1
    out = resize_mask(mask, (2, 2))
    # Output cell (0, 0) spans 1.5 × 1.5 input pixels: it holds all of pixel (0, 0).
    expected = torch.tensor([[4 / 9, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(out[0, 0], expected)
    mask[0, 1, 1] = 1  # the centre pixel is split evenly among the four cells
    torch.testing.assert_close(resize_mask(mask, (2, 2))[0, 0], expected + 1 / 9)


@pytest.mark.parametrize(("src", "dst"), [((5, 7), (3, 2)), ((4, 6), (7, 9)), ((30, 21), (7, 4))])
def test_resize_equals_exact_fractional_coverage(
    src: tuple[int, int], dst: tuple[int, int]
) -> None:
    mask = (torch.rand(2, 1, *src, dtype=torch.float64) > 0.6).to(torch.float64)
    out = resize_mask(mask, dst)
    assert out.shape == (mask.shape[0], 1, *dst)
    assert out.dtype == torch.float64
    for b in range(mask.shape[0]):
        torch.testing.assert_close(out[b, 0], reference_resize(mask[b, 0], *dst))


def test_resize_equals_torch_area_when_sizes_divide() -> None:
    mask = torch.rand(3, 1, 12, 20)
    torch.testing.assert_close(
        resize_mask(mask, (4, 5)), F.interpolate(mask, size=(4, 5), mode="area")
    )


def test_resize_keeps_full_and_empty_masks_exact() -> None:
    full = torch.ones(1, 1, 13, 17, dtype=torch.bool)
    assert bool((resize_mask(full, (5, 3)) == 1).all())
    assert bool((resize_mask(~full, (5, 3)) == 0).all())
    same = torch.rand(2, 6, 6)
    assert torch.equal(resize_mask(same, (6, 6)), same[:, None])


@given(
    st.integers(1, 9), st.integers(1, 9), st.integers(1, 9), st.integers(1, 9), st.integers(0, 99)
)
def test_resize_preserves_the_covered_fraction(
    h: int, w: int, big_h: int, big_w: int, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(1, 1, h, w, generator=generator, dtype=torch.float64)
    out = resize_mask(mask, (big_h, big_w))
    torch.testing.assert_close(out.mean(), mask.mean())
    assert float(out.min()) >= 0 and float(out.max()) <= 1 + 1e-12


def test_resize_accepts_bool_and_integer_masks() -> None:
    mask = torch.zeros(1, 4, 4, dtype=torch.uint8)
    mask[0, :2, :2] = 1
    expected = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    torch.testing.assert_close(resize_mask(mask, (2, 2)), expected)
    torch.testing.assert_close(resize_mask(mask.bool(), (2, 2)), expected)


# ---------------------------------------------------------------------------
# The guidance loss against the loops
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bce", "mse", "dice"])
@pytest.mark.parametrize("from_logits", [False, True])
def test_guidance_equals_reference_loop(kind: str, from_logits: bool) -> None:
    logits = torch.randn(4, 1, 5, 6, dtype=torch.float64) * 2
    attention = logits if from_logits else torch.sigmoid(logits)
    mask = lesion_masks(4, 15).double()  # 15 × 15 → 5 × 6: fractional coverage
    per_image = torch.stack(
        [
            reference_guidance(
                torch.sigmoid(logits[b, 0]), reference_resize(mask[b, 0], 5, 6), kind, 0.5
            )
            for b in range(4)
        ]
    )
    expected = {"none": per_image, "sum": per_image.sum(), "mean": per_image.mean()}
    for reduction, value in expected.items():
        loss = mask_guidance_loss(
            attention, mask, kind=kind, from_logits=from_logits, smooth=0.5, reduction=reduction
        )
        torch.testing.assert_close(loss, value)


@pytest.mark.parametrize("kind", ["bce", "mse", "dice"])
def test_valid_selects_the_annotated_images(kind: str) -> None:
    logits = torch.randn(4, 1, 7, 7, dtype=torch.float64)
    mask = lesion_masks(4, 28).double()
    valid = torch.tensor([True, False, True, False])
    per_image = mask_guidance_loss(logits, mask, kind=kind, from_logits=True, reduction="none")
    masked = mask_guidance_loss(
        logits, mask, kind=kind, from_logits=True, valid=valid, reduction="none"
    )
    torch.testing.assert_close(masked, per_image * valid)
    mean = mask_guidance_loss(logits, mask, kind=kind, from_logits=True, valid=valid)
    torch.testing.assert_close(mean, per_image[valid].mean())
    total = mask_guidance_loss(
        logits, mask, kind=kind, from_logits=True, valid=valid.long(), reduction="sum"
    )
    torch.testing.assert_close(total, per_image[valid].sum())


def test_no_valid_image_gives_zero_attached_to_the_graph() -> None:
    logits = torch.randn(3, 1, 4, 4, requires_grad=True)
    loss = mask_guidance_loss(
        logits, torch.ones(3, 4, 4), valid=torch.zeros(3, dtype=torch.bool), from_logits=True
    )
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and bool((logits.grad == 0).all())


def test_empty_mask_is_a_no_lesion_target() -> None:
    empty = torch.zeros(1, 1, 8, 8)
    # BCE and MSE: 0 exactly for an all-zero map, positive otherwise.
    zero_map = torch.zeros(1, 1, 4, 4)
    assert mask_guidance_loss(zero_map, empty, kind="mse").item() == 0.0
    assert mask_guidance_loss(zero_map, empty, kind="bce").item() == 0.0
    # Smoothed dice: sum(a) / (sum(a) + s), 0 for an empty map, rising with the mass.
    prob = torch.full((1, 1, 4, 4), 0.25)
    dice = mask_guidance_loss(prob, empty, kind="dice", smooth=2.0)
    torch.testing.assert_close(dice, torch.tensor(4.0 / 6.0))
    assert mask_guidance_loss(zero_map, empty, kind="dice").item() == 0.0
    prob.requires_grad_(True)
    mask_guidance_loss(prob, empty, kind="dice").backward()
    assert prob.grad is not None and bool((prob.grad > 0).all())


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int32, torch.float16])
def test_masks_of_any_dtype_give_the_float_result(dtype: torch.dtype) -> None:
    logits = torch.randn(3, 1, 5, 5)
    mask = lesion_masks(3, 13)  # 13 × 13 → 5 × 5: fractional coverage
    for kind in ("bce", "mse", "dice"):
        torch.testing.assert_close(
            mask_guidance_loss(logits, mask.to(dtype), kind=kind, from_logits=True),
            mask_guidance_loss(logits, mask, kind=kind, from_logits=True),
        )


def test_logits_and_probabilities_agree() -> None:
    logits = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    mask = lesion_masks(3, 12).double()
    for kind in ("bce", "mse", "dice"):
        torch.testing.assert_close(
            mask_guidance_loss(logits, mask, kind=kind, from_logits=True),
            mask_guidance_loss(torch.sigmoid(logits), mask, kind=kind),
        )


def test_bce_on_saturated_logits_keeps_its_gradient() -> None:
    # A confidently wrong map: logits of +40 where the mask is 0. sigmoid(40) is 1.0 in
    # float32, so BCE on probabilities loses the gradient; the logits path keeps it.
    logits = torch.full((1, 1, 2, 2), 40.0, requires_grad=True)
    loss = mask_guidance_loss(logits, torch.zeros(1, 1, 2, 2), from_logits=True)
    torch.testing.assert_close(loss, torch.tensor(40.0))
    loss.backward()
    assert logits.grad is not None
    torch.testing.assert_close(logits.grad, torch.full((1, 1, 2, 2), 0.25))


@pytest.mark.parametrize("kind", ["bce", "mse", "dice"])
@pytest.mark.parametrize("from_logits", [False, True])
def test_gradcheck(kind: str, from_logits: bool) -> None:
    logits = torch.randn(3, 1, 4, 5, dtype=torch.float64)
    attention = (logits if from_logits else torch.sigmoid(logits)).requires_grad_(True)
    mask = torch.rand(3, 1, 7, 9, dtype=torch.float64)
    valid = torch.tensor([True, True, False])

    def loss(a: torch.Tensor) -> torch.Tensor:
        return mask_guidance_loss(a, mask, kind=kind, from_logits=from_logits, valid=valid)

    assert torch.autograd.gradcheck(loss, (attention,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["bce", "mse", "dice"])
def test_autocast_low_precision_is_finite_and_close(dtype: torch.dtype, kind: str) -> None:
    conv = torch.nn.Conv2d(8, 1, 1)
    features = torch.randn(4, 8, 7, 7) * 4
    mask = lesion_masks(4, 224)
    with torch.autocast(device_type="cpu", dtype=dtype):
        logits = conv(features)
        assert logits.dtype == dtype
        loss = mask_guidance_loss(logits, mask, kind=kind, from_logits=True)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    exact = mask_guidance_loss(conv(features), mask, kind=kind, from_logits=True)
    torch.testing.assert_close(loss, exact, rtol=0.05, atol=0.02)
    half_probs = torch.sigmoid(logits.float()).to(dtype)
    assert torch.isfinite(mask_guidance_loss(half_probs, mask, kind=kind))


def test_module_matches_function() -> None:
    logits = torch.randn(3, 1, 5, 5)
    mask = lesion_masks(3, 10)
    valid = torch.tensor([1, 0, 1])
    criterion = MaskGuidanceLoss("dice", from_logits=True, smooth=0.5, reduction="sum")
    torch.testing.assert_close(
        criterion(logits, mask, valid),
        mask_guidance_loss(
            logits, mask, kind="dice", from_logits=True, smooth=0.5, valid=valid, reduction="sum"
        ),
    )
    assert "kind='dice'" in repr(criterion)


# ---------------------------------------------------------------------------
# Class activation map
# ---------------------------------------------------------------------------


def test_cam_equals_reference_loop_and_the_classifier() -> None:
    features = torch.randn(3, 4, 2, 3, dtype=torch.float64)
    fc = torch.nn.Linear(4, 5).double()
    target = torch.tensor([4, 0, 2])
    weight, bias = fc.weight.detach(), fc.bias.detach()
    cam = class_activation_map(features, fc.weight, target, fc_bias=fc.bias)
    assert cam.shape == (3, 1, 2, 3)
    for b in range(3):
        for i in range(2):
            for j in range(3):
                value = sum(
                    float(weight[target[b], c]) * float(features[b, c, i, j]) for c in range(4)
                ) + float(bias[target[b]])
                assert math.isclose(
                    float(cam.detach()[b, 0, i, j]), value, rel_tol=1e-12, abs_tol=1e-12
                )
    logits = fc(features.mean(dim=(2, 3)))
    torch.testing.assert_close(cam.mean(dim=(1, 2, 3)), logits[torch.arange(3), target])
    no_bias = class_activation_map(features, fc.weight, target)
    torch.testing.assert_close(no_bias + fc.bias[target][:, None, None, None], cam)


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8])
def test_cam_accepts_integer_targets_of_any_width(dtype: torch.dtype) -> None:
    # A uint8 target once indexed fc_weight as a boolean mask (an IndexError).
    features, weight = torch.randn(2, 4, 3, 3), torch.randn(3, 4)
    target = torch.tensor([2, 0])
    torch.testing.assert_close(
        class_activation_map(features, weight, target.to(dtype)),
        class_activation_map(features, weight, target),
    )


def test_cam_gradcheck_and_guidance() -> None:
    features = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([1, 3])
    assert torch.autograd.gradcheck(
        lambda f, w, c: class_activation_map(f, w, target, fc_bias=c), (features, weight, bias)
    )
    mask = torch.zeros(2, 1, 9, 9, dtype=torch.float64)
    mask[:, :, :3] = 1
    cam = class_activation_map(features, weight, target, fc_bias=bias)
    mask_guidance_loss(cam, mask, from_logits=True).backward()
    assert weight.grad is not None and bool(weight.grad[[1, 3]].abs().sum() > 0)
    assert bool((weight.grad[[0, 2]] == 0).all())  # classes not targeted get no gradient


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

A = torch.rand(2, 1, 4, 4)
M = torch.zeros(2, 1, 8, 8)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: mask_guidance_loss(A.long(), M), TypeError, "attention must be a floating"),
        (lambda: mask_guidance_loss(A[:, 0, 0], M), ValueError, r"attention must have shape \[B, 1"),
        (lambda: mask_guidance_loss(A.expand(2, 3, 4, 4), M), ValueError, "attention must have"),
        (lambda: mask_guidance_loss(A, M[:, 0, 0]), ValueError, r"mask must have shape \[B, 1, h, w\]"),
        (lambda: mask_guidance_loss(A, M[:1]), ValueError, "same batch size"),
        (lambda: mask_guidance_loss(A * 2, M), ValueError, r"attention must hold values in \[0, 1\]"),
        (lambda: mask_guidance_loss(A, M - 1), ValueError, r"mask must hold values in \[0, 1\]"),
        (lambda: mask_guidance_loss(A, M, kind="l1"), ValueError, "kind must be one of"),
        (lambda: mask_guidance_loss(A, M, smooth=0.0), ValueError, "smooth must be in"),
        (lambda: mask_guidance_loss(A, M, reduction="max"), ValueError, "reduction must be"),
        (lambda: mask_guidance_loss(A, M, valid=torch.ones(3)), ValueError, r"valid must have shape \[B\]"),
        (lambda: mask_guidance_loss(A, M, valid=torch.full((2,), 2)), ValueError, r"valid must hold only 0/1.*got other values: \[2\]"),
        (lambda: mask_guidance_loss(A, M, from_logits=1), TypeError, "from_logits must be a bool"),
        (lambda: mask_guidance_loss(A * float("nan"), M, from_logits=True), ValueError, "attention must be finite"),
        (lambda: resize_mask(M, (0, 3)), ValueError, "size must be a pair of positive ints"),
        (lambda: resize_mask(M, 7), ValueError, "size must be a pair"),
        (lambda: class_activation_map(A[:, 0], torch.rand(3, 1), torch.zeros(2, dtype=torch.long)), ValueError, r"features must have shape \[B, C, H, W\]"),
        (lambda: class_activation_map(A, torch.rand(3, 2), torch.zeros(2, dtype=torch.long)), ValueError, "fc_weight must have shape"),
        (lambda: class_activation_map(A, torch.rand(3, 1), torch.zeros(2)), TypeError, "target must be an integer"),
        (lambda: class_activation_map(A, torch.rand(3, 1), torch.tensor([0, 3])), ValueError, r"target must hold class indices in \[0, 3\)"),
        (lambda: class_activation_map(A, torch.rand(3, 1), torch.tensor([0, 1]), fc_bias=torch.rand(2)), ValueError, r"fc_bias must have shape \[K\]"),
        (lambda: class_activation_map(A / 0, torch.rand(3, 1), torch.tensor([0, 1])), ValueError, "features must be finite"),
        (lambda: class_activation_map(A, torch.rand(3, 1), torch.tensor([0, 1]), fc_bias=torch.zeros(3, dtype=torch.long)), TypeError, "fc_bias must be a floating"),
        (lambda: MaskGuidanceLoss("hinge"), ValueError, "kind must be one of"),
        (lambda: MaskGuidanceLoss(from_logits=1), TypeError, r"from_logits must be a bool, got 1 \(int\)"),
        (lambda: MaskGuidanceLoss(smooth=-1.0), ValueError, r"smooth must be in \(0.0, inf\], got -1.0"),
    ],
)  # fmt: skip
def test_bad_input_raises_clear_error(call, error: type[Exception], message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        call()
