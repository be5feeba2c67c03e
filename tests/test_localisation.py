"""Localisation metrics against plain float64 loops written from their definitions."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from examples.deep_pneumonia.localisation import (
    localisation_metrics,
    mass_fraction,
    overlay_figure,
    pointing_game,
    summarise,
    threshold_iou,
    upsample_map,
)

matplotlib.use("Agg")


def reference_upsample(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear, align_corners=False: source = (target + 0.5) * in / out - 0.5, clamped at 0."""
    h, w = a.shape
    out = np.zeros((height, width))
    for i in range(height):
        y = max((i + 0.5) * h / height - 0.5, 0.0)
        y0 = math.floor(y)
        y1 = min(y0 + 1, h - 1)
        wy = y - y0
        for j in range(width):
            x = max((j + 0.5) * w / width - 0.5, 0.0)
            x0 = math.floor(x)
            x1 = min(x0 + 1, w - 1)
            wx = x - x0
            out[i, j] = (
                (1 - wy) * (1 - wx) * a[y0, x0]
                + (1 - wy) * wx * a[y0, x1]
                + wy * (1 - wx) * a[y1, x0]
                + wy * wx * a[y1, x1]
            )
    return out


def reference_metrics(
    a: np.ndarray,
    lesion: np.ndarray,
    device: np.ndarray,
    lung: np.ndarray,
    valid: bool,
    threshold: float,
) -> dict[str, float]:
    """One image, pixel by pixel, from the module docstring's formulas.

    ``a`` is the map already at the mask's resolution: the upsampling is checked on its
    own (exact ties and thresholds after interpolation are at the mercy of rounding).
    """
    up = a
    pixels = [(i, j) for i in range(lesion.shape[0]) for j in range(lesion.shape[1])]
    total = sum(up[p] for p in pixels)
    peak = max(up[p] for p in pixels)
    has_lesion = valid and any(lesion[p] for p in pixels)
    has_device = any(device[p] for p in pixels)
    has_lung = any(lung[p] for p in pixels)
    nan = math.nan

    def mass(region: np.ndarray) -> float:
        return sum(up[p] for p in pixels if region[p]) / total if total > 0 else nan

    top = [p for p in pixels if up[p] == peak]
    hot = {p for p in pixels if up[p] >= threshold * peak}
    inside = {p for p in pixels if lesion[p]}
    return {
        "lesion_mass": mass(lesion) if has_lesion else nan,
        "lesion_area": len(inside) / len(pixels) if has_lesion else nan,
        "pointing": sum(1 for p in top if lesion[p]) / len(top) if has_lesion else nan,
        "iou": len(hot & inside) / len(hot | inside) if has_lesion and peak > 0 else nan,
        "device_mass": mass(device) if has_device else nan,
        "device_area": sum(1 for p in pixels if device[p]) / len(pixels) if has_device else nan,
        "outside_lung_mass": mass(1 - lung) if has_lung else nan,
        "outside_lung_area": sum(1 for p in pixels if not lung[p]) / len(pixels)
        if has_lung
        else nan,
    }


@st.composite
def cases(draw: st.DrawFn) -> tuple[torch.Tensor, ...]:
    batch = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    height, width = (
        h * draw(st.integers(1, 3)) + draw(st.integers(0, 2)),
        w + draw(st.integers(0, 5)),
    )
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(batch, 1, h, w, generator=g, dtype=torch.float64)
    if draw(st.booleans()):
        maps = (maps * 3).round()  # ties and all-zero maps
    masks = [
        (torch.rand(batch, 1, height, width, generator=g) < draw(st.sampled_from([0.0, 0.2, 0.7])))
        .double()
        .float()
        for _ in range(3)
    ]
    valid = torch.rand(batch, generator=g) < 0.8
    return (maps, *masks, valid)


@given(cases(), st.sampled_from([0.5, 0.2, 1.0]))
def test_metrics_match_reference_loop(case: tuple[torch.Tensor, ...], threshold: float) -> None:
    maps, lesion, device, lung, valid = case
    got = localisation_metrics(
        maps, lesion, device=device, lung=lung, valid=valid, threshold=threshold
    )
    for b in range(maps.shape[0]):
        want = reference_metrics(
            upsample_map(maps, lesion.shape[-2:])[b, 0].numpy(),
            lesion[b, 0].numpy(),
            device[b, 0].numpy(),
            lung[b, 0].numpy(),
            bool(valid[b]),
            threshold,
        )
        for name, value in want.items():
            assert got[name].dtype == torch.float64
            np.testing.assert_allclose(got[name][b].item(), value, rtol=1e-9, atol=1e-12)


@given(st.integers(1, 5), st.integers(1, 5), st.integers(0, 6), st.integers(0, 6))
def test_upsample_matches_reference_loop(h: int, w: int, dh: int, dw: int) -> None:
    a = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(h * 7 + w))
    got = upsample_map(a, (h + dh, w + dw))[0, 0].numpy()
    np.testing.assert_allclose(got, reference_upsample(a[0, 0].double().numpy(), h + dh, w + dw))


def test_uniform_map_scores_the_area() -> None:
    lesion = torch.zeros(2, 1, 20, 30)
    lesion[0, :, 2:7, 3:9] = 1
    lesion[1, :, 10:20, :] = 1
    maps = torch.ones(2, 1, 5, 6)
    metrics = localisation_metrics(maps, lesion)
    area = lesion.flatten(1).double().mean(dim=1)
    torch.testing.assert_close(metrics["lesion_mass"], area)
    torch.testing.assert_close(metrics["pointing"], area)
    torch.testing.assert_close(metrics["lesion_area"], area)


def test_peak_in_and_out_of_lesion() -> None:
    lesion = torch.zeros(2, 1, 16, 16)
    lesion[:, :, :8, :8] = 1
    maps = torch.zeros(2, 1, 4, 4)
    maps[0, 0, 0, 0] = 1.0
    maps[1, 0, 3, 3] = 1.0
    torch.testing.assert_close(
        pointing_game(maps, lesion), torch.tensor([1.0, 0.0], dtype=torch.float64)
    )
    assert mass_fraction(maps, lesion)[0] > 0.9 and mass_fraction(maps, lesion)[1] < 0.1
    assert threshold_iou(maps, lesion)[1] == 0.0


def test_undefined_is_nan() -> None:
    maps = torch.zeros(2, 1, 2, 2)
    maps[1] = 1.0
    lesion = torch.zeros(2, 1, 4, 4)
    lesion[1, 0, 0, 0] = 1.0
    metrics = localisation_metrics(
        maps, lesion, device=torch.zeros(2, 1, 4, 4), lung=torch.zeros(2, 1, 4, 4)
    )
    for name in ("lesion_mass", "pointing", "iou", "lesion_area"):
        assert math.isnan(metrics[name][0].item()) and math.isfinite(metrics[name][1].item())
    for name in ("device_mass", "device_area", "outside_lung_mass", "outside_lung_area"):
        assert torch.isnan(metrics[name]).all()
    invalid = localisation_metrics(maps, lesion, valid=torch.tensor([True, False]))
    assert torch.isnan(invalid["lesion_mass"]).all()


def test_bad_inputs_are_named() -> None:
    maps, mask = torch.rand(1, 1, 4, 4), torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="non-negative"):
        mass_fraction(-maps, mask)
    with pytest.raises(ValueError, match="binary"):
        mass_fraction(maps, mask + 0.5)
    with pytest.raises(ValueError, match="at least as large"):
        mass_fraction(maps, torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"\[B, 1, h, w\]"):
        mass_fraction(maps[0], mask)
    with pytest.raises(ValueError, match="threshold"):
        threshold_iou(maps, mask, threshold=0.0)
    with pytest.raises(ValueError, match="valid"):
        pointing_game(maps, mask, valid=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="finite"):
        mass_fraction(maps * math.nan, mask)
    with pytest.raises(TypeError, match="floating"):
        mass_fraction(maps.long(), mask)


def test_summarise_leaves_out_nan() -> None:
    assert summarise({"a": torch.tensor([1.0, math.nan, 2.0]), "b": np.array([math.nan])}) == {
        "a": 1.5,
        "b": None,
    }


def test_overlay_figure_draws_every_contour(tmp_path: object) -> None:
    import matplotlib.pyplot as plt

    image = torch.rand(1, 32, 32)
    lesion, device, lung = torch.zeros(1, 32, 32), torch.zeros(1, 32, 32), torch.zeros(1, 32, 32)
    lesion[0, 5:12, 5:12], device[0, 20:30, 2:4], lung[0, 2:30, 2:30] = 1, 1, 1
    figure = overlay_figure(
        [image, image, image],
        [torch.rand(1, 4, 4)] * 3,
        [lesion, lesion, torch.zeros(1, 32, 32)],
        devices=[device, None, None],
        lungs=[lung, None, None],
        titles=["a", "b", "c"],
        columns=2,
    )
    axes = figure.axes
    assert len(axes) == 4
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in axes[:2]]
    assert legends == [["lesion", "device", "lung"], ["lesion"]]
    assert axes[2].get_legend() is None and axes[0].get_title() == "a"
    figure.savefig(f"{tmp_path}/overlay.png")
    plt.close(figure)
    with pytest.raises(ValueError, match="one entry per image"):
        overlay_figure([image], [image, image])
