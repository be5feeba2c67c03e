"""Mask-guided attention: gating, hard mode, teacher forcing, backbones, learning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrast_attn import MaskGuidedAttention
from contrast_attn.functional import mask_guidance_loss, resize_mask
from tests._guidance_learning import attention_mass_inside


def square_masks(batch: int, size: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """[B, 1, size, size] binary masks, one square of `side` pixels at a random place each."""
    mask = torch.zeros(batch, 1, size, size)
    corners = torch.randint(0, size - side + 1, (batch, 2), generator=generator)
    for b, (top, left) in enumerate(corners.tolist()):
        mask[b, :, top : top + side, left : left + side] = 1
    return mask


def test_soft_gate_residual_and_plain() -> None:
    features = torch.randn(3, 16, 5, 6)
    attn = MaskGuidedAttention(16)
    attended, attention = attn(features)
    assert attended.shape == features.shape and attention.shape == (3, 1, 5, 6)
    assert bool(((attention > 0) & (attention < 1)).all())
    torch.testing.assert_close(attended, features * (1 + attention))
    assert attn.last_logits is not None
    torch.testing.assert_close(torch.sigmoid(attn.last_logits), attention)
    attn.residual = False
    attended, attention = attn(features)
    torch.testing.assert_close(attended, features * attention)


def test_hard_gate_binarises_forward() -> None:
    features = torch.randn(4, 8, 7, 7)
    attn = MaskGuidedAttention(8, mode="hard", threshold=0.45, residual=False)
    attended, attention = attn(features)
    gate = (attention >= 0.45).float()
    assert 0 < float(gate.mean()) < 1  # both sides of the threshold occur
    torch.testing.assert_close(attended, features * gate)


def test_straight_through_gradient_equals_soft_gradient() -> None:
    features = torch.randn(4, 8, 6, 6)
    upstream = torch.randn(4, 8, 6, 6)
    grads = {}
    for mode in ("soft", "hard"):
        torch.manual_seed(1)
        attn = MaskGuidedAttention(8, mode=mode, residual=False)
        attended, _ = attn(features)
        # A loss linear in the attended features: d loss / d gate = features * upstream in
        # both modes, so the straight-through gradient of the scorer equals the soft one.
        (attended * upstream).sum().backward()
        grads[mode] = [p.grad for p in attn.parameters()]
    assert len(grads["soft"]) == 5
    for soft, hard in zip(grads["soft"], grads["hard"]):
        assert soft is not None and hard is not None and bool(soft.abs().sum() > 0)
        torch.testing.assert_close(hard, soft)


@pytest.mark.parametrize("mode", ["soft", "hard"])
@pytest.mark.parametrize("residual", [False, True])
def test_gate_gradient_false_trains_the_scorer_by_the_map_alone(mode: str, residual: bool) -> None:
    features = torch.randn(4, 8, 6, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(4, 8, 6, 6, dtype=torch.float64)
    outputs = {}
    for gate_gradient in (True, False):
        torch.manual_seed(1)
        attn = MaskGuidedAttention(
            8, mode=mode, residual=residual, gate_gradient=gate_gradient
        ).double()
        attended, attention = attn(features)
        outputs[gate_gradient] = (attended, attention)
        features_grad, *grads = torch.autograd.grad(
            (attended * upstream).sum(), [features, *attn.parameters()], allow_unused=True
        )
        # The forward pass is the same; the features' gradient is the gate's value.
        gate = attention >= 0.5 if mode == "hard" else attention
        factor = (1 + gate.double()) if residual else gate.double()
        if not gate_gradient:
            assert all(g is None for g in grads)  # no path from the attended features
            torch.testing.assert_close(features_grad, (factor * upstream).detach())
        else:
            assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    torch.testing.assert_close(outputs[True][0], outputs[False][0])
    torch.testing.assert_close(outputs[True][1], outputs[False][1])
    # The map itself still carries the scorer's gradient (for the guidance loss).
    attn = MaskGuidedAttention(8, mode=mode, residual=residual, gate_gradient=False).double()
    _, attention = attn(features)
    attention.sum().backward()
    assert all(p.grad is not None for p in attn.parameters())


def test_teacher_forcing_probability_one_gates_exactly_by_the_mask() -> None:
    features = torch.randn(3, 8, 7, 7)
    mask = torch.zeros(3, 1, 30, 30)
    mask[:, :, 5:22, 3:17] = 1  # fractional coverage at 7 × 7
    target = resize_mask(mask, (7, 7))
    valid = torch.tensor([True, False, True])
    for mode in ("soft", "hard"):
        attn = MaskGuidedAttention(8, mode=mode, teacher_forcing=1.0).train()
        attended, attention = attn(features, mask, valid)
        torch.testing.assert_close(attended[0::2], features[0::2] * (1 + target[0::2]))
        # The unannotated image is gated by the prediction; the map itself is returned.
        predicted = attention if mode == "soft" else (attention >= 0.5).float()
        torch.testing.assert_close(attended[1], features[1] * (1 + predicted[1]))
        assert not torch.allclose(attention[0], target[0])


def test_teacher_forcing_never_in_eval_or_with_probability_zero() -> None:
    features = torch.randn(4, 8, 7, 7)
    mask = torch.ones(4, 1, 14, 14)
    attn = MaskGuidedAttention(8, teacher_forcing=0.0)
    without_mask, _ = attn(features)
    with_mask, _ = attn(features, mask)
    torch.testing.assert_close(with_mask, without_mask)
    attn.teacher_forcing = 1.0
    attn.eval()
    evaluated, attention = attn(features, mask)
    torch.testing.assert_close(evaluated, features * (1 + attention))


def test_teacher_forcing_is_drawn_per_image_from_torch_rng() -> None:
    features = torch.randn(400, 8, 2, 2)
    mask = torch.ones(400, 1, 2, 2)
    attn = MaskGuidedAttention(8, teacher_forcing=0.3, residual=False)
    torch.manual_seed(5)
    first, _ = attn(features, mask)
    forced = torch.isclose(first, features).all(dim=(1, 2, 3))
    assert 0.2 < float(forced.float().mean()) < 0.4
    torch.manual_seed(5)
    again, _ = attn(features, mask)
    torch.testing.assert_close(again, first)


def test_gradcheck_float64() -> None:
    attn = MaskGuidedAttention(3, hidden_channels=2).double()
    features = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: attn(f), (features,), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_low_precision_is_finite(dtype: torch.dtype) -> None:
    attn = MaskGuidedAttention(16, mode="hard", teacher_forcing=0.5)
    features = torch.randn(4, 16, 7, 7, requires_grad=True)
    mask = torch.zeros(4, 224, 224)
    mask[:, 50:150, 20:90] = 1
    with torch.autocast(device_type="cpu", dtype=dtype):
        attended, attention = attn(features, mask)
        assert attn.last_logits is not None
        loss = attended.float().mean() + mask_guidance_loss(
            attn.last_logits, mask, from_logits=True
        )
    assert torch.isfinite(attended).all() and torch.isfinite(attention).all()
    loss.backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()


def test_on_a_torchvision_resnet_stage() -> None:
    torchvision = pytest.importorskip("torchvision")
    resnet = torchvision.models.resnet18(weights=None, num_classes=2)
    stem = nn.Sequential(
        resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1, resnet.layer2
    )
    attn = MaskGuidedAttention(128, mode="hard", teacher_forcing=0.5)
    images = torch.randn(2, 3, 64, 64)
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 10:40, 5:35] = 1
    features = stem(images)  # [2, 128, 8, 8]
    attended, attention = attn(features, mask, valid=torch.tensor([True, True]))
    assert attended.shape == (2, 128, 8, 8) and attention.shape == (2, 1, 8, 8)
    assert attn.last_logits is not None
    loss = mask_guidance_loss(attn.last_logits, mask, from_logits=True) + attended.mean()
    loss.backward()
    assert resnet.conv1.weight.grad is not None and resnet.conv1.weight.grad.abs().sum() > 0


def test_on_a_plain_cnn_with_masks_of_another_resolution() -> None:
    cnn = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU())
    attn = MaskGuidedAttention(8, residual=False, teacher_forcing=1.0)
    features = cnn(torch.randn(2, 1, 21, 21))  # 11 × 11
    mask = torch.zeros(2, 33, 33, dtype=torch.bool)
    mask[:, 4:20, 9:31] = True
    attended, _ = attn(features, mask)
    torch.testing.assert_close(attended, features * resize_mask(mask, (11, 11)))


def test_guidance_raises_attention_mass_inside_the_lesion() -> None:
    # A tiny synthetic task: 16 × 16 images, noise plus one brighter 4 × 4 lesion. The
    # fraction of attention mass inside the lesion starts near its area (1/16) and must
    # rise well above it under the guidance loss alone (about 0.75 after 150 steps).
    generator = torch.Generator().manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1)
    )
    attn = MaskGuidedAttention(8, hidden_channels=8)

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        mask = square_masks(size, 16, 4, generator)
        images = torch.randn(size, 1, 16, 16, generator=generator) * 0.5 + mask
        return images, mask

    start, end = attention_mass_inside(backbone, attn, batch, steps=150, batch_size=16, held_out=64)
    assert start < 0.15
    assert end > 0.5 and end > 4 * start, (start, end)


F4 = torch.randn(2, 8, 4, 4)
M4 = torch.ones(2, 1, 8, 8)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: MaskGuidedAttention(8)(F4[0]), ValueError, r"features must have shape \[B, C, H, W\]"),
        (lambda: MaskGuidedAttention(4)(F4), ValueError, "features must have in_channels = 4"),
        (lambda: MaskGuidedAttention(8)(F4.long()), TypeError, "features must be a floating"),
        (lambda: MaskGuidedAttention(8)(F4, M4[:, 0, 0]), ValueError, r"mask must have shape \[B, 1, h, w\] or \[B, h, w\]"),
        (lambda: MaskGuidedAttention(8)(F4, M4[:1]), ValueError, "same batch size"),
        (lambda: MaskGuidedAttention(8)(F4, M4 * 2), ValueError, r"mask must hold values in \[0, 1\]"),
        (lambda: MaskGuidedAttention(8)(F4, M4, torch.ones(3)), ValueError, r"valid must have shape \[B\]"),
        (lambda: MaskGuidedAttention(8)(F4, None, torch.ones(2)), ValueError, "valid was given without a mask"),
        (lambda: MaskGuidedAttention(8, threshold=0.0), ValueError, r"threshold must be in \(0.0, 1.0\)"),
        (lambda: MaskGuidedAttention(8, threshold=1.0), ValueError, r"threshold must be in \(0.0, 1.0\)"),
        (lambda: MaskGuidedAttention(8, teacher_forcing=1.5), ValueError, r"teacher_forcing must be in \[0.0, 1.0\]"),
        (lambda: MaskGuidedAttention(8, mode="sparse"), ValueError, "mode must be one of"),
        (lambda: MaskGuidedAttention(8, residual=None), TypeError, "residual must be a bool"),
        (lambda: MaskGuidedAttention(8, gate_gradient=1), TypeError, "gate_gradient must be a bool"),
        (lambda: MaskGuidedAttention(8, kernel_size=2), ValueError, "kernel_size must be odd"),
        (lambda: MaskGuidedAttention(0), ValueError, "in_channels must be >= 1"),
    ],
)  # fmt: skip
def test_bad_input_raises_clear_error(call, error: type[Exception], message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        call()


def test_repr_names_the_settings() -> None:
    text = repr(MaskGuidedAttention(8, mode="hard", teacher_forcing=0.25, gate_gradient=False))
    assert "mode='hard'" in text and "teacher_forcing=0.25" in text
    assert "gate_gradient=False" in text


@pytest.mark.parametrize("prior", [0.05, 0.5, 0.9])
def test_initial_attention_starts_the_map_near_the_prior(prior: float) -> None:
    torch.manual_seed(0)
    attn = MaskGuidedAttention(16, initial_attention=prior).eval()
    _, attention = attn(torch.randn(4, 16, 8, 8))
    assert abs(float(attention.detach().mean()) - prior) < 0.1
    default = MaskGuidedAttention(16).eval()
    assert abs(float(default(torch.randn(4, 16, 8, 8))[1].detach().mean()) - 0.5) < 0.1


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, float("nan")])
def test_initial_attention_outside_unit_interval_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="initial_attention must"):
        MaskGuidedAttention(16, initial_attention=bad)
