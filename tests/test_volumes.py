"""3-D volumes (CT, MRI): ``[B, C, D, H, W]`` features with ``[B, 1, d, h, w]`` masks.

Every spatial function and layer against a plain float64 loop over voxels written
from its docstring's formula; the exact volume resize against boxes intersected
with Python fractions; gradcheck; a sphere-lesion phantom that the attention
learns to find; and the feature maps of a MONAI 3-D network.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from contrast_attn import (
    ContrastiveFeatureRegularizer,
    MaskedAveragePool,
    MaskGuidanceLoss,
    MaskGuidedAttention,
)
from contrast_attn.functional import (
    class_activation_map,
    contrastive_feature_regularizer,
    mask_guidance_loss,
    masked_average_pool,
    resize_mask,
)
from tests._guidance_learning import attention_mass_inside

Shape3 = tuple[int, int, int]

# ---------------------------------------------------------------------------
# References: float64 loops over voxels.
# ---------------------------------------------------------------------------


def voxels(shape: Shape3) -> list[Shape3]:
    return list(itertools.product(*(range(n) for n in shape)))


def box_overlap(
    out_index: Shape3, out_shape: Shape3, in_index: Shape3, in_shape: Shape3
) -> Fraction:
    """The fraction of output voxel ``out_index``'s box that input voxel ``in_index`` covers.

    Both grids span the unit cube; voxel ``i`` of ``n`` along an axis is ``[i / n, (i + 1) / n)``.
    """
    volume = Fraction(1)
    for i, n, k, m in zip(out_index, out_shape, in_index, in_shape):
        lo = max(Fraction(i, n), Fraction(k, m))
        hi = min(Fraction(i + 1, n), Fraction(k + 1, m))
        volume *= max(Fraction(0), hi - lo) * n
    return volume


def reference_resize(mask: torch.Tensor, size: Shape3) -> torch.Tensor:
    """``[d, h, w]`` → ``size``: each output voxel the coverage-weighted mean of the input voxels."""
    in_shape = tuple(mask.shape)
    values = mask.double().tolist()
    out = torch.zeros(size, dtype=torch.float64)
    for o in voxels(size):
        # The input voxels whose boxes can meet output voxel o's (the others add 0).
        near = itertools.product(
            *(range(i * m // n, -(-(i + 1) * m // n)) for i, n, m in zip(o, size, in_shape))
        )
        total = Fraction(0)
        for v in near:
            weight = box_overlap(o, size, v, in_shape)  # type: ignore[arg-type]
            total += weight * Fraction(values[v[0]][v[1]][v[2]])
        out[o] = float(total)
    return out


def reference_guidance(prob: torch.Tensor, target: torch.Tensor, kind: str, smooth: float) -> float:
    """One volume's loss: ``[D, H, W]`` probabilities against ``[D, H, W]`` targets."""
    cells = voxels(tuple(prob.shape))  # type: ignore[arg-type]
    a = [float(prob[c]) for c in cells]
    m = [float(target[c]) for c in cells]
    if kind == "bce":
        return -sum(mi * math.log(ai) + (1 - mi) * math.log(1 - ai) for ai, mi in zip(a, m)) / len(
            cells
        )
    if kind == "mse":
        return sum((ai - mi) ** 2 for ai, mi in zip(a, m)) / len(cells)
    overlap = sum(ai * mi for ai, mi in zip(a, m))
    return 1 - (2 * overlap + smooth) / (sum(a) + sum(m) + smooth)


def reference_pool(
    features: torch.Tensor, weight: torch.Tensor
) -> tuple[list[float], list[float], float]:
    """One volume: ``[C, D, H, W]`` features, ``[D, H, W]`` coverage → (lesion, background, area)."""
    cells = voxels(tuple(weight.shape))  # type: ignore[arg-type]
    lesion_mass = sum(float(weight[c]) for c in cells)
    background_mass = sum(1 - float(weight[c]) for c in cells)
    lesion, background = [], []
    for channel in features.double():
        inside = sum(float(weight[c]) * float(channel[c]) for c in cells)
        outside = sum((1 - float(weight[c])) * float(channel[c]) for c in cells)
        lesion.append(inside / lesion_mass if lesion_mass > 0 else 0.0)
        background.append(outside / background_mass if background_mass > 0 else 0.0)
    return lesion, background, lesion_mass / len(cells)


def reference_regularizer(
    features: torch.Tensor, mask: torch.Tensor, labels: list[int], temperature: float
) -> float:
    """SupCon L_out over pooled lesion anchors, background rows as negatives only (no projection)."""
    size: Shape3 = tuple(features.shape[2:])  # type: ignore[assignment]
    lesion, background, has_lesion, has_background = [], [], [], []
    for b in range(features.shape[0]):
        weight = reference_resize(mask[b, 0], size)
        u, v, area = reference_pool(features[b], weight)
        lesion.append(u)
        background.append(v)
        has_lesion.append(area > 0)
        has_background.append(area < 1)

    def unit(x: list[float]) -> list[float]:
        norm = math.sqrt(sum(t * t for t in x))
        return [t / norm for t in x]

    def sim(x: list[float], y: list[float]) -> float:
        return sum(a * b for a, b in zip(unit(x), unit(y))) / temperature

    anchors = [i for i, ok in enumerate(has_lesion) if ok]
    negatives = [j for j, ok in enumerate(has_background) if ok]
    losses = []
    for i in anchors:
        others = [k for k in anchors if k != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(math.exp(sim(lesion[i], lesion[k])) for k in others) + sum(
            math.exp(sim(lesion[i], background[j])) for j in negatives
        )
        losses.append(
            -sum(sim(lesion[i], lesion[p]) - math.log(denominator) for p in positives)
            / len(positives)
        )
    return sum(losses) / len(losses)


def sphere_masks(batch: int, size: int, radius: float, generator: torch.Generator) -> torch.Tensor:
    """``[B, 1, size, size, size]`` binary masks, one ball of ``radius`` voxels each, at random."""
    grid = torch.stack(
        torch.meshgrid(*(torch.arange(size, dtype=torch.float32),) * 3, indexing="ij")
    )
    centres = radius + torch.rand(batch, 3, generator=generator) * (size - 1 - 2 * radius)
    distance = (grid[None] - centres[:, :, None, None, None]).square().sum(dim=1).sqrt()
    return (distance <= radius).float()[:, None]


def lesion_volumes(batch: int, size: Shape3) -> torch.Tensor:
    """``[B, 1, *size]`` binary masks, one box each at a different place; the last one empty."""
    mask = torch.zeros(batch, 1, *size)
    for b in range(batch - 1):
        d, h, w = (b % 2, (2 * b) % 3, (b + 1) % 3)
        mask[b, :, d : d + size[0] // 2, h : h + size[1] // 2 + 1, w : w + size[2] // 2] = 1
    return mask


# ---------------------------------------------------------------------------
# The exact volume resize
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"), [((5, 4, 6), (3, 2, 4)), ((3, 5, 2), (4, 7, 3)), ((4, 6, 3), (2, 3, 3))]
)
def test_resize_equals_box_coverage_loop(src: Shape3, dst: Shape3) -> None:
    mask = torch.rand(2, 1, *src, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = resize_mask(mask, dst)
    assert got.shape == (2, 1, *dst) and got.dtype == torch.float64
    for b in range(2):
        torch.testing.assert_close(got[b, 0], reference_resize(mask[b, 0], dst), rtol=0, atol=1e-13)


def test_resize_divisible_sizes_equal_area_interpolation() -> None:
    mask = torch.rand(3, 1, 8, 12, 6)
    torch.testing.assert_close(
        resize_mask(mask, (4, 3, 2)), F.interpolate(mask, size=(4, 3, 2), mode="area")
    )


sizes = st.tuples(*(st.integers(1, 9),) * 3)


@given(src=sizes, dst=sizes, seed=st.integers(0, 2**16))
def test_resize_conserves_mass_and_range(src: Shape3, dst: Shape3, seed: int) -> None:
    mask = torch.rand(
        2, 1, *src, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    got = resize_mask(mask, dst)
    # The mean over the volume (the lesion's share of it) is what an area resize keeps.
    torch.testing.assert_close(
        got.mean(dim=(2, 3, 4)), mask.mean(dim=(2, 3, 4)), rtol=1e-12, atol=0
    )
    assert bool((got >= 0).all()) and bool((got <= 1 + 1e-12).all())


@given(src=sizes, dst=sizes)
def test_resize_full_mask_is_exactly_one_and_empty_exactly_zero(src: Shape3, dst: Shape3) -> None:
    assert torch.equal(resize_mask(torch.ones(1, 1, *src), dst), torch.ones(1, 1, *dst))
    assert torch.equal(
        resize_mask(torch.zeros(1, 1, *src, dtype=torch.bool), dst), torch.zeros(1, 1, *dst)
    )


def test_resize_full_mask_exact_at_ct_sizes_in_float32() -> None:
    # 65 × 512 × 512 voxels: the product of the sizes exceeds float32's exact integers.
    got = resize_mask(torch.ones(1, 1, 65, 512, 512, dtype=torch.bool), (7, 16, 13))
    assert torch.equal(got, torch.ones(1, 1, 7, 16, 13))


def test_resize_accepts_a_volume_without_channel_and_refuses_an_image_mask() -> None:
    volume = torch.rand(2, 4, 6, 5)
    torch.testing.assert_close(
        resize_mask(volume, (2, 3, 5)), resize_mask(volume[:, None], (2, 3, 5))
    )
    with pytest.raises(ValueError, match=r"ambiguous.*\[B, 1, d, h, w\]"):
        resize_mask(torch.rand(2, 1, 6, 5), (2, 3, 5))
    with pytest.raises(ValueError, match=r"or a triple \(D, H, W\)"):
        resize_mask(volume, (1, 2, 3, 4))


# ---------------------------------------------------------------------------
# Guidance, pooling, CAM, regulariser against the voxel loops
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bce", "mse", "dice"])
def test_guidance_equals_voxel_loop(kind: str) -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 1, 3, 4, 2, generator=gen, dtype=torch.float64)
    mask = lesion_volumes(3, (5, 7, 4)).double()
    got = mask_guidance_loss(
        logits, mask, kind=kind, from_logits=True, smooth=0.5, reduction="none"
    )
    for b in range(3):
        target = reference_resize(mask[b, 0], (3, 4, 2))
        expected = reference_guidance(torch.sigmoid(logits[b, 0]), target, kind, 0.5)
        assert got[b].item() == pytest.approx(expected, rel=1e-12, abs=1e-14)
    # The module, a squeezed [B, d, h, w] mask and probabilities give the same.
    module = MaskGuidanceLoss(kind, smooth=0.5, reduction="none")
    torch.testing.assert_close(module(torch.sigmoid(logits), mask[:, 0]), got)


def test_pooling_equals_voxel_loop() -> None:
    gen = torch.Generator().manual_seed(3)
    features = torch.randn(3, 4, 3, 2, 4, generator=gen, dtype=torch.float64)
    mask = lesion_volumes(3, (5, 3, 7))
    pooled = masked_average_pool(features, mask)
    for b in range(3):
        weight = reference_resize(mask[b, 0], (3, 2, 4))
        lesion, background, area = reference_pool(features[b], weight)
        torch.testing.assert_close(pooled.lesion[b], torch.tensor(lesion, dtype=torch.float64))
        torch.testing.assert_close(
            pooled.background[b], torch.tensor(background, dtype=torch.float64)
        )
        assert pooled.lesion_area[b].item() == pytest.approx(area, abs=1e-14)
    assert pooled.lesion_area[2] == 0 and torch.equal(
        pooled.lesion[2], torch.zeros(4, dtype=torch.float64)
    )
    for got, expected in zip(MaskedAveragePool()(features, mask), pooled):
        torch.testing.assert_close(got, expected)


def test_cam_equals_voxel_loop_and_averages_to_the_logit() -> None:
    gen = torch.Generator().manual_seed(4)
    features = torch.randn(2, 3, 2, 3, 2, generator=gen, dtype=torch.float64)
    fc = nn.Linear(3, 4).double()
    target = torch.tensor([3, 1])
    cam = class_activation_map(features, fc.weight, target, fc_bias=fc.bias)
    assert cam.shape == (2, 1, 2, 3, 2)
    weight, bias = fc.weight.detach(), fc.bias.detach()
    for b in range(2):
        t = int(target[b])
        for v in voxels((2, 3, 2)):
            expected = sum(float(weight[t, k]) * float(features[(b, k, *v)]) for k in range(3))
            assert cam[(b, 0, *v)].item() == pytest.approx(expected + float(bias[t]), abs=1e-14)
    logits = fc(features.mean(dim=(2, 3, 4)))
    torch.testing.assert_close(cam.mean(dim=(1, 2, 3, 4)), logits[[0, 1], target])


@pytest.mark.parametrize("labels", [[0, 0, 0, 0, 0], [0, 1, 0, 1, 1]])
def test_regularizer_equals_voxel_loop(labels: list[int]) -> None:
    gen = torch.Generator().manual_seed(5)
    features = torch.randn(5, 4, 2, 3, 2, generator=gen, dtype=torch.float64)
    mask = lesion_volumes(5, (4, 6, 4))
    got = contrastive_feature_regularizer(features, mask, torch.tensor(labels), temperature=0.3)
    expected = reference_regularizer(features, mask, labels, 0.3)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    tiled = contrastive_feature_regularizer(
        features, mask, torch.tensor(labels), temperature=0.3, chunk_size=2
    )
    torch.testing.assert_close(tiled, got)


def test_gradcheck_float64() -> None:
    gen = torch.Generator().manual_seed(6)
    features = torch.randn(3, 3, 2, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(3, 1, 2, 3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = lesion_volumes(3, (3, 5, 4)).double()
    fc = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, 1])
    torch.manual_seed(0)
    attention = MaskGuidedAttention(3, spatial_dims=3, hidden_channels=2).double()
    checks = {
        "guidance": (lambda a: mask_guidance_loss(a, mask, kind="dice", from_logits=True), (logits,)),
        "pool": (lambda f: torch.cat(masked_average_pool(f, mask)[:2], 1), (features,)),
        "cam": (lambda f, w: class_activation_map(f, w, target), (features, fc)),
        "regularizer": (
            lambda f: contrastive_feature_regularizer(f, mask, temperature=0.5),
            (features,),
        ),
        "attention": (lambda f: attention(f)[0], (features,)),
        "resize": (lambda m: resize_mask(m, (2, 3, 3)), (torch.rand(2, 1, 3, 4, 5, dtype=torch.float64, requires_grad=True),)),
    }  # fmt: skip
    for name, (fn, inputs) in checks.items():
        assert torch.autograd.gradcheck(fn, inputs, fast_mode=True), name


# ---------------------------------------------------------------------------
# MaskGuidedAttention(spatial_dims=3)
# ---------------------------------------------------------------------------


def test_attention_volume_gates_and_scores_with_3d_convolutions() -> None:
    torch.manual_seed(0)
    attn = MaskGuidedAttention(6, spatial_dims=3, kernel_size=3).eval()
    assert isinstance(attn.scorer[0], nn.Conv3d) and isinstance(attn.scorer[1], nn.BatchNorm3d)
    features = torch.randn(2, 6, 3, 4, 5)
    attended, attention = attn(features)
    assert attended.shape == features.shape and attention.shape == (2, 1, 3, 4, 5)
    conv, norm, _, out = attn.scorer
    logits = out(F.relu(norm(F.conv3d(features, conv.weight, padding=1))))
    torch.testing.assert_close(attention, torch.sigmoid(logits))
    torch.testing.assert_close(attended, features * (1 + attention))
    assert "spatial_dims=3" in repr(attn)


def test_attention_volume_teacher_forcing_gates_by_voxel_coverage() -> None:
    attn = MaskGuidedAttention(4, spatial_dims=3, residual=False, teacher_forcing=1.0).train()
    features = torch.randn(2, 4, 2, 3, 3, dtype=torch.float64)
    attn.double()
    mask = lesion_volumes(2, (5, 7, 4))
    attended, _ = attn(features, mask[:, 0], valid=torch.tensor([True, False]))
    gate = reference_resize(mask[0, 0], (2, 3, 3))
    torch.testing.assert_close(attended[0], features[0] * gate)
    assert not torch.allclose(attended[1], features[1] * reference_resize(mask[1, 0], (2, 3, 3)))


def test_attention_default_stays_2d() -> None:
    attn = MaskGuidedAttention(4)
    assert attn.spatial_dims == 2 and isinstance(attn.scorer[0], nn.Conv2d)
    assert set(attn.state_dict()) == set(MaskGuidedAttention(4, spatial_dims=2).state_dict())


V5 = torch.randn(2, 4, 3, 4, 4)
M5 = torch.ones(2, 1, 6, 8, 8)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: MaskGuidedAttention(4)(V5), ValueError, r"features must have shape \[B, C, H, W\], got shape \(2, 4, 3, 4, 4\)"),
        (lambda: MaskGuidedAttention(4, spatial_dims=3)(V5[:, :, 0]), ValueError, r"features must have shape \[B, C, D, H, W\]"),
        (lambda: MaskGuidedAttention(3, spatial_dims=3)(V5), ValueError, r"in_channels = 3 channels \(\[B, C, D, H, W\]\)"),
        (lambda: MaskGuidedAttention(4, spatial_dims=3)(V5, M5[:, :, 0]), ValueError, "ambiguous"),
        (lambda: MaskGuidedAttention(4, spatial_dims=3)(V5, M5[:, :, :, 0, 0]), ValueError, r"mask must have shape \[B, 1, d, h, w\] or \[B, d, h, w\]"),
        (lambda: MaskGuidedAttention(4, spatial_dims=4), ValueError, "spatial_dims must be 2 .images. or 3 .volumes., got 4"),
        (lambda: MaskGuidedAttention(4, spatial_dims=3.0), TypeError, "spatial_dims must be an int"),
        (lambda: masked_average_pool(V5, torch.ones(2, 1, 4, 4)), ValueError, "ambiguous"),
        (lambda: masked_average_pool(V5[None], M5), ValueError, r"features must have shape \[B, C, H, W\] or \[B, C, D, H, W\]"),
        (lambda: contrastive_feature_regularizer(V5, M5[:1]), ValueError, "same batch size"),
        (lambda: mask_guidance_loss(V5[:, :1], M5[:, :, 0]), ValueError, "ambiguous"),
        (lambda: mask_guidance_loss(V5[:, :2].sigmoid(), M5), ValueError, r"attention must have shape \[B, 1, h, w\] or \[B, h, w\] \(or \[B, 1, d, h, w\] for a volume\)"),
        (lambda: class_activation_map(V5[:, 0, 0], torch.rand(2, 3), torch.tensor([0, 1])), ValueError, r"features must have shape \[B, C, H, W\] or \[B, C, D, H, W\]"),
    ],
)  # fmt: skip
def test_bad_volume_input_raises_clear_error(call, error: type[Exception], message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        call()


# ---------------------------------------------------------------------------
# A phantom: a sphere lesion in a noisy volume
# ---------------------------------------------------------------------------


def test_guidance_puts_attention_mass_in_a_sphere_lesion() -> None:
    # 16³ volumes of noise with one brighter ball of radius 2.5 (about 1/60 of the volume).
    # The attention's share of mass inside the lesion starts near its volume fraction and
    # must rise well above it under the guidance loss alone (about 0.5 after 100 steps).
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 8, 3, stride=2, padding=1)
    )
    attn = MaskGuidedAttention(8, spatial_dims=3, hidden_channels=8)

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        mask = sphere_masks(size, 16, 2.5, generator)
        volumes = torch.randn(size, 1, 16, 16, 16, generator=generator) * 0.5 + mask
        return volumes, mask

    start, end = attention_mass_inside(backbone, attn, batch, steps=100, batch_size=8, held_out=32)
    assert start < 0.1
    assert end > 0.3 and end > 5 * start, (start, end)


# ---------------------------------------------------------------------------
# On a MONAI 3-D network's feature maps
# ---------------------------------------------------------------------------


def _monai_nets():  # type: ignore[no-untyped-def]
    try:
        from monai.networks import nets
    except ImportError:
        pytest.skip("monai is not installed (pip install monai --no-deps; it is in the test extra)")
    return nets


def test_on_a_monai_resnet_feature_map() -> None:
    nets = _monai_nets()
    torch.manual_seed(0)
    net = nets.ResNet(
        block="basic",
        layers=[1, 1, 1, 1],
        block_inplanes=[8, 16, 16, 32],
        spatial_dims=3,
        n_input_channels=1,
        conv1_t_size=3,
        num_classes=2,
    ).eval()
    captured: dict[str, torch.Tensor] = {}
    net.layer4.register_forward_hook(lambda _m, _i, out: captured.__setitem__("features", out))
    volumes = torch.randn(4, 1, 24, 24, 24)
    mask = sphere_masks(4, 24, 5.0, torch.Generator().manual_seed(1))
    logits = net(volumes)
    features = captured["features"]  # [4, 32, 2, 2, 2]
    assert features.ndim == 5
    # The CAM of MONAI's own classifier averages to its logits.
    target = torch.tensor([0, 1, 1, 0])
    cam = class_activation_map(features, net.fc.weight, target, fc_bias=net.fc.bias)
    torch.testing.assert_close(cam.mean(dim=(1, 2, 3, 4)), logits[torch.arange(4), target])
    # Pooling, guidance and the regulariser on those features, with gradients into the net.
    pooled = masked_average_pool(features, mask)
    weight = resize_mask(mask, tuple(features.shape[2:]))[:, 0]
    expected = (features * weight[:, None]).sum(dim=(2, 3, 4)) / weight.sum(dim=(1, 2, 3))[:, None]
    torch.testing.assert_close(pooled.lesion, expected)
    attn = MaskGuidedAttention(32, spatial_dims=3, teacher_forcing=0.5).train()
    regularizer = ContrastiveFeatureRegularizer(32, projection_dim=8)
    attended, _ = attn(features, mask)
    assert attn.last_logits is not None
    loss = (
        mask_guidance_loss(attn.last_logits, mask, from_logits=True)
        + regularizer(attended, mask, target)
        + mask_guidance_loss(cam, mask, from_logits=True)
    )
    loss.backward()
    assert net.conv1.weight.grad is not None and net.conv1.weight.grad.abs().sum() > 0


def test_on_a_monai_basic_unet_decoder_map() -> None:
    nets = _monai_nets()
    torch.manual_seed(0)
    net = nets.BasicUNet(
        spatial_dims=3, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4)
    )
    captured: dict[str, torch.Tensor] = {}
    net.upcat_3.register_forward_hook(lambda _m, _i, out: captured.__setitem__("features", out))
    volumes = torch.randn(2, 1, 32, 32, 32)
    mask = sphere_masks(2, 32, 6.0, torch.Generator().manual_seed(2))
    net(volumes)
    features = captured["features"]  # [2, 8, 8, 8, 8]
    attn = MaskGuidedAttention(features.shape[1], spatial_dims=3)
    attended, attention = attn(features, mask)
    assert attention.shape == (2, 1, *features.shape[2:])
    assert attn.last_logits is not None
    loss = mask_guidance_loss(attn.last_logits, mask, kind="dice", from_logits=True)
    (loss + contrastive_feature_regularizer(attended, mask)).backward()
    assert net.conv_0.conv_0.conv.weight.grad is not None
