"""Where a map looks: localisation metrics against lesion, device and lung masks, and overlays.

A map :math:`A_b` (an attention map or a ReLU'd CAM, ``[B, 1, h, w]``, non-negative) is
compared with binary masks ``[B, 1, H, W]`` of the image's resolution. The map is first
brought to the mask's resolution by bilinear interpolation (``align_corners=False``,
:func:`upsample_map`), so every mask pixel is either in a region or not and no mask is
blurred; then, with :math:`a` the upsampled map of one image and :math:`L`, :math:`D`,
:math:`U` its lesion, device and lung masks:

.. math::
    \\text{mass}(R) = \\frac{\\sum_p a_p R_p}{\\sum_p a_p}, \\qquad
    \\text{area}(R) = \\frac{1}{HW} \\sum_p R_p,

.. math::
    \\text{pointing} = \\frac{|\\{p \\in M : L_p = 1\\}|}{|M|}, \\quad
    M = \\arg\\max_p a_p, \\qquad
    \\text{IoU} = \\frac{|T \\cap L|}{|T \\cup L|}, \\quad T = \\{p : a_p \\ge t \\max_q a_q\\} .

``lesion_mass`` is :math:`\\text{mass}(L)`, ``device_mass`` :math:`\\text{mass}(D)` and
``outside_lung_mass`` :math:`\\text{mass}(1 - U)`: the shortcut audit (how much the map
rests on tubes and probes, on labels and borders). Each ``*_area`` is what a uniform map
gets, the reference a map must beat. The pointing game (Zhang et al., "Top-down neural
attention by excitation backprop", ECCV 2016) counts a hit when the maximum lies in the
lesion; a map with several equal maxima scores the share of them inside, so a uniform
map scores the lesion's area. The IoU binarises the map at ``threshold`` (default 0.5)
times its own maximum, because CAMs have no fixed scale.

A metric is NaN where it is undefined: lesion metrics for images without an annotated
(``valid``) non-empty lesion, device metrics for images without a device, lung metrics
without a lung mask, and masses of an all-zero map. Average with NaNs left out
(:func:`summarise`). All is computed in float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "localisation_metrics",
    "mass_fraction",
    "overlay_figure",
    "plot_overlay",
    "pointing_game",
    "summarise",
    "threshold_iou",
    "upsample_map",
]

ArrayLike = Union[torch.Tensor, np.ndarray]


def _check_map(maps: torch.Tensor, name: str = "maps") -> None:
    if not isinstance(maps, torch.Tensor) or not maps.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {type(maps).__name__}")
    if maps.dim() != 4 or maps.shape[1] != 1:
        raise ValueError(f"{name} must have shape [B, 1, h, w], got {list(maps.shape)}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(f"{name} must be finite")
    if bool((maps < 0).any()):
        raise ValueError(f"{name} must be non-negative (apply .relu() to a CAM first)")


def _check_mask(mask: torch.Tensor, maps: torch.Tensor, name: str) -> None:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(mask).__name__}")
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != maps.shape[0]:
        raise ValueError(
            f"{name} must have shape [B, 1, H, W] with B = {maps.shape[0]}, got {list(mask.shape)}"
        )
    if mask.shape[2] < maps.shape[2] or mask.shape[3] < maps.shape[3]:
        raise ValueError(
            f"{name} ({list(mask.shape[2:])}) must be at least as large as the map "
            f"({list(maps.shape[2:])}): the map is upsampled to the mask"
        )
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must be binary (values 0 and 1)")


def upsample_map(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bring maps to a mask's resolution: bilinear, ``align_corners=False``, in float64.

    Args:
        maps: ``[B, 1, h, w]``.
        size: ``(H, W)`` with ``H >= h`` and ``W >= w``.

    Returns:
        float64 ``[B, 1, H, W]``; the input itself (in float64) when the sizes agree.

    Examples:
        >>> upsample_map(torch.tensor([[[[0.0, 1.0]]]]), (1, 4))
        tensor([[[[0.0000, 0.2500, 0.7500, 1.0000]]]], dtype=torch.float64)
    """
    maps = maps.double()
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def _nan_where(values: torch.Tensor, undefined: torch.Tensor) -> torch.Tensor:
    return torch.where(undefined, torch.full_like(values, math.nan), values)


def mass_fraction(maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Fraction of each map's mass inside a region.

    Args:
        maps: ``[B, 1, h, w]`` non-negative.
        region: ``[B, 1, H, W]`` binary, ``H >= h``, ``W >= w``.

    Returns:
        float64 ``[B]``; NaN where the map is all zero.

    Raises:
        TypeError, ValueError: on bad types, shapes or values.

    Examples:
        >>> maps = torch.tensor([[[[1.0, 3.0]]]])
        >>> mass_fraction(maps, torch.tensor([[[[0.0, 1.0]]]]))
        tensor([0.7500], dtype=torch.float64)
    """
    _check_map(maps)
    _check_mask(region, maps, "region")
    a = upsample_map(maps, region.shape[-2:]).flatten(1)
    mass = a.sum(dim=1)
    inside = (a * region.flatten(1).double()).sum(dim=1)
    return _nan_where(inside / mass.clamp_min(1e-300), mass <= 0)


def _lesion_undefined(lesion: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    empty = lesion.flatten(1).amax(dim=1) <= 0
    if valid is None:
        return empty
    if valid.shape != (lesion.shape[0],):
        raise ValueError(f"valid must have shape [{lesion.shape[0]}], got {list(valid.shape)}")
    return empty | ~valid.bool().to(lesion.device)


def pointing_game(
    maps: torch.Tensor, lesion: torch.Tensor, *, valid: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Whether each map's maximum lies in the lesion (the share of tied maxima inside).

    Args:
        maps: ``[B, 1, h, w]`` non-negative.
        lesion: ``[B, 1, H, W]`` binary.
        valid: ``[B]`` whether each lesion mask is annotated (default: all).

    Returns:
        float64 ``[B]`` in [0, 1]; NaN without an annotated, non-empty lesion.

    Examples:
        >>> lesion = torch.tensor([[[[0.0, 1.0, 0.0]]]])
        >>> pointing_game(torch.tensor([[[[0.1, 0.9, 0.2]]]]), lesion)
        tensor([1.], dtype=torch.float64)
    """
    _check_map(maps)
    _check_mask(lesion, maps, "lesion")
    a = upsample_map(maps, lesion.shape[-2:]).flatten(1)
    top = a == a.amax(dim=1, keepdim=True)
    hits = (top & (lesion.flatten(1) > 0)).sum(dim=1).double() / top.sum(dim=1).double()
    return _nan_where(hits, _lesion_undefined(lesion, valid))


def threshold_iou(
    maps: torch.Tensor,
    lesion: torch.Tensor,
    *,
    threshold: float = 0.5,
    valid: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """IoU of the lesion with the map thresholded at ``threshold`` times its maximum.

    Args:
        maps: ``[B, 1, h, w]`` non-negative.
        lesion: ``[B, 1, H, W]`` binary.
        threshold: relative threshold in (0, 1].
        valid: ``[B]`` whether each lesion mask is annotated (default: all).

    Returns:
        float64 ``[B]`` in [0, 1]; NaN without an annotated, non-empty lesion or for an
        all-zero map.

    Raises:
        ValueError: on a threshold outside (0, 1], or bad shapes or values.

    Examples:
        >>> lesion = torch.tensor([[[[0.0, 1.0, 1.0, 0.0]]]])
        >>> threshold_iou(torch.tensor([[[[0.0, 1.0, 0.2, 0.0]]]]), lesion)
        tensor([0.5000], dtype=torch.float64)
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
    _check_map(maps)
    _check_mask(lesion, maps, "lesion")
    a = upsample_map(maps, lesion.shape[-2:]).flatten(1)
    peak = a.amax(dim=1, keepdim=True)
    hot = a >= threshold * peak
    inside = lesion.flatten(1) > 0
    iou = (hot & inside).sum(dim=1).double() / (hot | inside).sum(dim=1).double().clamp_min(1)
    return _nan_where(iou, _lesion_undefined(lesion, valid) | (peak[:, 0] <= 0))


def _area(region: torch.Tensor) -> torch.Tensor:
    return region.flatten(1).double().mean(dim=1)


def localisation_metrics(
    maps: torch.Tensor,
    lesion: torch.Tensor,
    *,
    device: Optional[torch.Tensor] = None,
    lung: Optional[torch.Tensor] = None,
    valid: Optional[torch.Tensor] = None,
    threshold: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Every localisation metric of a batch of maps (see the module docstring).

    Args:
        maps: ``[B, 1, h, w]`` non-negative attention maps or ReLU'd CAMs.
        lesion: ``[B, 1, H, W]`` binary lesion masks.
        device: ``[B, 1, H, W]`` binary device masks, or ``None``.
        lung: ``[B, 1, H, W]`` binary lung masks, or ``None``.
        valid: ``[B]`` whether each lesion mask is annotated (default: all).
        threshold: the IoU's relative threshold.

    Returns:
        float64 ``[B]`` tensors: ``lesion_mass``, ``lesion_area``, ``pointing``,
        ``iou``, and with ``device`` ``device_mass`` and ``device_area``, with ``lung``
        ``outside_lung_mass`` and ``outside_lung_area``; NaN where undefined.

    Examples:
        >>> maps = torch.tensor([[[[0.0, 2.0], [1.0, 1.0]]]])
        >>> lesion = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])
        >>> metrics = localisation_metrics(maps, lesion)
        >>> metrics["lesion_mass"].item(), metrics["lesion_area"].item()
        (0.5, 0.25)
    """
    _check_map(maps)
    _check_mask(lesion, maps, "lesion")
    undefined = _lesion_undefined(lesion, valid)
    out = {
        "lesion_mass": _nan_where(mass_fraction(maps, lesion), undefined),
        "lesion_area": _nan_where(_area(lesion), undefined),
        "pointing": pointing_game(maps, lesion, valid=valid),
        "iou": threshold_iou(maps, lesion, threshold=threshold, valid=valid),
    }
    if device is not None:
        none = device.flatten(1).amax(dim=1) <= 0
        out["device_mass"] = _nan_where(mass_fraction(maps, device), none)
        out["device_area"] = _nan_where(_area(device), none)
    if lung is not None:
        none = lung.flatten(1).amax(dim=1) <= 0
        out["outside_lung_mass"] = _nan_where(mass_fraction(maps, 1 - lung), none)
        out["outside_lung_area"] = _nan_where(1 - _area(lung), none)
    return out


def summarise(metrics: Mapping[str, ArrayLike]) -> dict[str, Optional[float]]:
    """Mean of each metric over the images where it is defined (``None`` where nowhere).

    Examples:
        >>> summarise({"pointing": torch.tensor([1.0, float("nan"), 0.0])})
        {'pointing': 0.5}
    """
    summary: dict[str, Optional[float]] = {}
    for name, values in metrics.items():
        array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values)
        finite = array[np.isfinite(array)]
        summary[name] = float(finite.mean()) if finite.size else None
    return summary


def _plane(array: ArrayLike) -> np.ndarray:
    values = array.detach().cpu().double().numpy() if isinstance(array, torch.Tensor) else array
    plane = np.asarray(values, dtype=np.float64)
    while plane.ndim > 2 and plane.shape[0] == 1:
        plane = plane[0]
    if plane.ndim != 2:
        raise ValueError(f"expected an [H, W] or [1, H, W] array, got shape {list(plane.shape)}")
    return plane


def plot_overlay(
    ax: Any,
    image: ArrayLike,
    attention: ArrayLike,
    lesion: Optional[ArrayLike] = None,
    *,
    device: Optional[ArrayLike] = None,
    lung: Optional[ArrayLike] = None,
    alpha: float = 0.45,
    title: Optional[str] = None,
) -> None:
    """Draw a radiograph, a map over it and the contours of its lesion, devices and lungs.

    Args:
        ax: a matplotlib ``Axes``.
        image: ``[H, W]`` (or ``[1, H, W]``) radiograph in [0, 1].
        attention: ``[h, w]`` (or ``[1, h, w]``) map, upsampled to the image
            (:func:`upsample_map`) and scaled to its maximum.
        lesion: ``[H, W]`` binary lesion mask, drawn as a green contour.
        device: ``[H, W]`` binary device mask, drawn in red.
        lung: ``[H, W]`` binary lung mask, drawn dashed in cyan.
        alpha: opacity of the map.
        title: the panel's title.
    """
    from matplotlib.lines import Line2D

    picture = _plane(image)
    heat = upsample_map(torch.from_numpy(_plane(attention))[None, None], picture.shape)[0, 0]
    heat = heat / heat.max().clamp_min(1e-12)
    ax.imshow(picture, cmap="gray", vmin=0.0, vmax=1.0)
    ax.imshow(heat.numpy(), cmap="inferno", alpha=alpha, vmin=0.0, vmax=1.0)
    handles = []
    contours: list[tuple[Optional[ArrayLike], str, Literal["solid", "dashed"], str]] = [
        (lesion, "lime", "solid", "lesion"),
        (device, "red", "solid", "device"),
        (lung, "cyan", "dashed", "lung"),
    ]
    for mask, colour, style, label in contours:
        if mask is None:
            continue
        plane = _plane(mask)
        if plane.max() > 0 and plane.min() < 1:
            ax.contour(plane, levels=[0.5], colors=colour, linewidths=1.0, linestyles=style)
            handles.append(Line2D([], [], color=colour, linestyle=style, label=label))
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=6, framealpha=0.6)
    if title is not None:
        ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def overlay_figure(
    images: Sequence[ArrayLike],
    maps: Sequence[ArrayLike],
    lesions: Optional[Sequence[ArrayLike]] = None,
    *,
    devices: Optional[Sequence[Optional[ArrayLike]]] = None,
    lungs: Optional[Sequence[Optional[ArrayLike]]] = None,
    titles: Optional[Sequence[str]] = None,
    columns: int = 4,
) -> Any:
    """A grid of :func:`plot_overlay` panels, one per image.

    Args:
        images: radiographs ``[H, W]``.
        maps: one map per image.
        lesions: one lesion mask per image, or ``None``.
        devices: one device mask (or ``None``) per image, or ``None``.
        lungs: one lung mask (or ``None``) per image, or ``None``.
        titles: one title per image.
        columns: panels per row.

    Returns:
        The matplotlib ``Figure`` (the caller saves and closes it).

    Raises:
        ValueError: when the sequences differ in length or are empty.
    """
    import matplotlib.pyplot as plt

    count = len(images)
    lengths = {
        name: len(values)
        for name, values in (
            ("maps", maps),
            ("lesions", lesions),
            ("devices", devices),
            ("lungs", lungs),
            ("titles", titles),
        )
        if values is not None
    }
    if count == 0 or any(n != count for n in lengths.values()):
        raise ValueError(f"need one entry per image ({count} images), got lengths {lengths}")
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.6 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= count:
            ax.set_axis_off()
            continue
        plot_overlay(
            ax,
            images[i],
            maps[i],
            None if lesions is None else lesions[i],
            device=None if devices is None else devices[i],
            lung=None if lungs is None else lungs[i],
            title=None if titles is None else titles[i],
        )
    figure.tight_layout()
    return figure
