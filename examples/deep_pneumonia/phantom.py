"""A synthetic chest X-ray phantom with lesion masks and an optional shortcut marker.

Each image is a frontal (PA) radiograph drawn from a handful of analytic shapes: a
soft-tissue thorax, two lung fields (dark, with vascular markings denser near the
hila), the mediastinum and spine, the heart overlapping the left lung (on the image's
right, as a radiologist reads a PA film), posterior ribs and clavicles, and quantum
noise. What varies from image to image besides the disease, as between real films:
patient size, breadth, position and rotation; rib and vessel contrast; exposure and
post-processing (gain, offset, gamma); the noise level. A linear model on a few raw
pixels is therefore a weak classifier, and features invariant to these nuisances
(what SimCLR's augmentations teach) are worth learning. Classes differ by the lesion
drawn inside the lungs, by its texture as much as by its density:

* ``normal``: no lesion (an annotated, empty mask);
* ``bacterial``: lobar consolidation, a dense, mottled opacity with air bronchograms
  (dark branching airways) filling part of one lobe, sharply bounded by the fissure;
* ``viral``: a diffuse interstitial pattern, a reticular (net-like) opacity, bilateral
  and perihilar;
* ``covid19``: peripheral, bilateral, lower-zone ground-glass opacity, hazy, faint and
  finely mottled.

The lesion mask marks the pixels of the visible lung fields (the heart excluded) where
the lesion's extent weight, before density and texture, is at least 0.5. The classes
are separable only through the lesion's density, texture and distribution, at
contrasts comparable to the anatomy and the noise.

Shortcut marker: chest X-ray classifiers are known to learn hospital-specific cues
(laterality markers, text, devices) instead of the disease (DeGrave et al., Nature
Machine Intelligence, 2021). With ``marker_correlation`` set, each image carries a
bright "R" marker in one corner, outside the lungs; with probability
``marker_correlation`` the corner is the one assigned to the image's class, otherwise
it is uniform. The training (and internal validation) split uses a high correlation,
the test split ``0.0`` (uniform, independent of the class): a model that reads the
marker fails on the test split, a model that looks at the lesion does not.

Determinism: image ``index`` is drawn from its own generator seeded with
``(seed, index)``, its lesion from ``(seed, index, 2)`` and its marker from
``(seed, index, 1)``, so any subset can be generated in any order, an image is the same
whatever the marker setting, and an image of a lesion class differs from the normal
image of the same index only by its lesion (the same "patient", healthy and sick).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch

from .dataset import SampleTransform, XrayDataset

__all__ = [
    "CLASS_NAMES",
    "CORNERS",
    "DEFAULT_CLASS_FRACTIONS",
    "PhantomDataset",
    "PhantomRadiograph",
    "class_counts",
    "marker_corners",
    "phantom_labels",
    "render_radiograph",
]

CLASS_NAMES = ("normal", "bacterial", "viral", "covid19")
DEFAULT_CLASS_FRACTIONS = (0.60, 0.25, 0.10, 0.05)
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")

NORMAL, BACTERIAL, VIRAL, COVID19 = range(4)

# The lead "R" laterality marker, 5 x 7 cells.
_GLYPH = np.array(
    [
        [1, 1, 1, 1, 0],
        [1, 0, 0, 0, 1],
        [1, 0, 0, 0, 1],
        [1, 1, 1, 1, 0],
        [1, 0, 1, 0, 0],
        [1, 0, 0, 1, 0],
        [1, 0, 0, 0, 1],
    ],
    dtype=bool,
)


@dataclass(frozen=True)
class PhantomRadiograph:
    """One rendered phantom image.

    Attributes:
        image: float32 ``[S, S]`` in [0, 1].
        lesion: bool ``[S, S]``, the lesion mask (empty for ``normal``).
        lungs: bool ``[S, S]``, the lung fields.
        marker_corner: index into :data:`CORNERS`, or -1 without a marker.
    """

    image: np.ndarray
    lesion: np.ndarray
    lungs: np.ndarray
    marker_corner: int


def class_counts(num_images: int, fractions: Sequence[float]) -> list[int]:
    """Images per class: ``num_images * fractions`` rounded by the largest remainder.

    Args:
        num_images: total number of images.
        fractions: non-negative class fractions summing to 1.

    Returns:
        The counts, summing to ``num_images``.

    Raises:
        ValueError: when ``num_images`` is negative or ``fractions`` are not a distribution.
    """
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    if any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    exact = [num_images * f for f in fractions]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda c: counts[c] - exact[c])
    for c in by_remainder[: num_images - sum(counts)]:
        counts[c] += 1
    return counts


def phantom_labels(
    num_images: int, fractions: Sequence[float] = DEFAULT_CLASS_FRACTIONS, *, seed: int = 0
) -> list[int]:
    """Class of each phantom image: exact class counts, in a seeded random order.

    Args:
        num_images: total number of images.
        fractions: fraction of each class of :data:`CLASS_NAMES`.
        seed: seed of the order.

    Returns:
        One label per image.

    Raises:
        ValueError: when ``fractions`` does not have one entry per class.
    """
    if len(fractions) != len(CLASS_NAMES):
        raise ValueError(
            f"fractions must have {len(CLASS_NAMES)} entries ({', '.join(CLASS_NAMES)}), "
            f"got {len(fractions)}"
        )
    counts = class_counts(num_images, fractions)
    labels = np.repeat(np.arange(len(counts)), counts)
    return [int(x) for x in np.random.default_rng([seed, 2**31]).permutation(labels)]


def marker_corners(
    labels: Sequence[int], indices: Sequence[int], *, seed: int, correlation: float
) -> list[int]:
    """Corner of the shortcut marker of each image.

    With probability ``correlation`` the corner is the class's own
    (``CORNERS[label]``), otherwise it is uniform over the four corners.

    Args:
        labels: class of each image.
        indices: phantom index of each image (seeds the draw).
        seed: the phantom's seed.
        correlation: in [0, 1]; 0 makes the corner independent of the class.

    Returns:
        One corner index per image.

    Raises:
        ValueError: when ``correlation`` is outside [0, 1].
    """
    if not 0.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must lie in [0, 1], got {correlation}")
    corners = []
    for label, index in zip(labels, indices):
        rng = np.random.default_rng([seed, index, 1])
        follow, uniform = rng.random() < correlation, int(rng.integers(len(CORNERS)))
        corners.append(label % len(CORNERS) if follow else uniform)
    return corners


@functools.lru_cache(maxsize=32)
def _interpolation_matrix(size: int, cells: int) -> np.ndarray:
    """``[size, cells + 2]`` Gaussian-kernel weights from a coarse grid to the pixels."""
    pixels = (np.arange(size) + 0.5) / size * cells
    nodes = np.arange(cells + 2) - 0.5
    weights = np.exp(-(((pixels[:, None] - nodes[None, :]) / 0.8) ** 2))
    return np.asarray(weights / weights.sum(axis=1, keepdims=True), dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Unit-variance noise with about ``cells`` blobs across (separable interpolation)."""
    weights = _interpolation_matrix(size, cells)
    coarse = rng.standard_normal((cells + 2, cells + 2), dtype=np.float32)
    field = weights @ coarse @ weights.T
    return np.asarray((field - field.mean()) / (field.std() + 1e-6), dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float32)


def _band(
    distance: np.ndarray, half_width: Union[float, np.ndarray], softness: float
) -> np.ndarray:
    """1 inside ``|distance| < half_width``, falling off smoothly over ``softness``."""
    return _sigmoid((half_width - np.abs(distance)) / softness)


@dataclass(frozen=True)
class _Lungs:
    """The lung fields in lung coordinates (each pixel belongs to the nearer lung).

    ``side`` is -1 in the right lung (image left) and +1 in the left lung; ``v`` runs from
    the apex (-1) to the base (+1); ``lateral`` from the mediastinum (-1) to the chest
    wall (+1); ``radius`` is 1 on the border; ``soft`` is the smoothed indicator.
    """

    side: np.ndarray
    v: np.ndarray
    lateral: np.ndarray
    radius: np.ndarray
    soft: np.ndarray


def _lungs(x: np.ndarray, y: np.ndarray, u: Callable[[float, float], float]) -> _Lungs:
    """Two superellipse lungs, narrow at the apex, the right one (image left) shorter."""
    fields = []
    for side in (-1.0, 1.0):
        cx = side * u(0.40, 0.45)
        cy = (-0.08 if side < 0 else -0.04) + u(-0.03, 0.03)
        ax = 0.33 * u(0.92, 1.08)
        ay = (0.64 if side < 0 else 0.68) * u(0.94, 1.06)
        v = (y - cy) / ay
        taper = 0.45 + 0.55 * np.clip((v + 1.0) / 1.3, 0.0, 1.0)
        lateral = side * (x - cx) / (ax * taper)
        # Dome-shaped diaphragm: the base rises toward the mediastinum.
        v = v + 0.18 * (1.0 - lateral) * np.clip(v, 0.0, None)
        lateral2, v2 = lateral * lateral, v * v
        radius = np.sqrt(np.sqrt(lateral2 * lateral2 + v2 * v2))
        fields.append((np.full_like(x, side), v, lateral, radius))
    nearer = fields[0][3] < fields[1][3]
    side, v, lateral, radius = (np.where(nearer, a, b) for a, b in zip(*fields))
    return _Lungs(side, v, lateral, radius, _sigmoid((1.0 - radius) / 0.03))


def render_radiograph(
    label: int,
    *,
    seed: int,
    index: int,
    image_size: int,
    noise: float = 0.03,
    marker_corner: int = -1,
) -> PhantomRadiograph:
    """Draw one phantom radiograph of class ``label``.

    Args:
        label: index into :data:`CLASS_NAMES`.
        seed: the phantom's seed.
        index: the image's index; ``(seed, index)`` seeds its generator.
        image_size: side length S in pixels (32 or more).
        noise: standard deviation of the additive quantum noise.
        marker_corner: index into :data:`CORNERS` for the shortcut marker, -1 for none.

    Returns:
        The image, its lesion mask, its lung fields and the marker corner.

    Raises:
        ValueError: on an unknown label or corner, ``image_size < 32`` or negative noise.
    """
    if label not in range(len(CLASS_NAMES)):
        raise ValueError(f"label must be in [0, {len(CLASS_NAMES)}), got {label}")
    if marker_corner not in range(-1, len(CORNERS)):
        raise ValueError(f"marker_corner must be -1 or in [0, {len(CORNERS)}), got {marker_corner}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng([seed, index])
    size = image_size
    u = rng.uniform
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    gy, gx = np.meshgrid(axis, axis, indexing="ij")
    # Patient size and position: rotation, scale (habitus, distance to the detector),
    # shift and a wider or narrower chest.
    angle, scale, breadth = math.radians(u(-6.0, 6.0)), u(0.84, 1.08), u(0.92, 1.08)
    cos, sin = math.cos(angle), math.sin(angle)
    x = (cos * gx + sin * gy) / (scale * breadth) + u(-0.1, 0.1)
    y = (-sin * gx + cos * gy) / scale + u(-0.1, 0.08)
    x_abs = np.abs(x)

    body_x, body_y = x / 0.92, (y - 0.25) / 1.15
    body = _sigmoid((1.0 - body_x**4 - body_y**4) / 0.08)
    lungs = _lungs(x, y, u)

    # Soft tissue, thicker in the middle; air in the lungs, darker toward the base.
    tissue = body * (0.5 + 0.1 * (1.0 - x_abs))
    air = lungs.soft * (0.36 + 0.05 * y + 0.03 * _smooth_noise(rng, size, 3))
    # Vascular markings: fine branching ridges, denser near the hila.
    hilar_distance = np.sqrt((x_abs - 0.2) ** 2 + (y + 0.02) ** 2)
    ridges = np.exp(-((_smooth_noise(rng, size, max(4, size // 10)) / 0.3) ** 2))
    vessels = lungs.soft * np.exp(-hilar_distance / u(0.25, 0.4)) * (u(0.04, 0.1) * ridges + 0.08)

    # Mediastinum (with the dark trachea above the hila), the spine faint behind it,
    # the heart low and to the image's right.
    mediastinum = _band(x - 0.03, 0.11 + 0.06 * np.clip(y, 0.0, 1.0), 0.025)
    trachea = _band(x, 0.035, 0.01) * _sigmoid((-0.15 - y) / 0.04)
    vertebrae = 0.55 + 0.45 * np.cos((y + u(0.0, 1.0)) * (2.0 * np.pi / 0.13))
    spine = _band(x, 0.05, 0.01) * vertebrae - 0.6 * trachea
    hx, hy, hax, hay = u(0.12, 0.18), u(0.42, 0.5), u(0.36, 0.42), u(0.28, 0.33)
    heart = _sigmoid((1.0 - np.sqrt(((x - hx) / hax) ** 2 + ((y - hy) / hay) ** 2)) / 0.04)
    central = np.maximum(mediastinum, heart)
    # The visible lung fields end at the cardiac silhouette.
    fields = (lungs.radius < 1.0) & (heart < 0.5)

    # Posterior ribs: periodic arcs rising from the spine then curving down laterally.
    first, spacing = u(-0.8, -0.74), u(0.125, 0.14)
    phase = (y - first + 0.3 * x_abs - 0.65 * x * x) / spacing
    ribs = _band(phase - np.round(phase), 0.16, 0.07) * (phase > -0.5) * (phase < 9.5)
    ribs *= _band(x_abs - 0.47, 0.4, 0.03) * (0.3 + 0.7 * lungs.soft)
    clavicles = _band(y + 0.72 + 0.14 * x_abs - 0.2 * x * x, 0.035, 0.01)
    clavicles *= _band(x_abs - 0.35, 0.3, 0.03)
    bones = u(0.04, 0.11) * ribs + 0.12 * clavicles + 0.06 * spine

    lesion_rng = np.random.default_rng([seed, index, 2])
    lesion_weight, lesion_density = _lesion(label, lesion_rng, size, lungs)
    density = (
        tissue
        - air * (1.0 - 0.75 * central)
        + vessels
        + 0.2 * central
        + body * bones
        + lungs.soft * lesion_density
    )

    # Exposure and post-processing (gain, offset, gamma) and quantum noise, all per image.
    gain, offset, gamma = u(0.8, 1.15), u(-0.06, 0.06), math.exp(u(-0.3, 0.3))
    image = np.clip(density * gain + offset, 0.0, 1.0) ** gamma
    image = image + noise * u(0.5, 1.5) * rng.standard_normal((size, size), dtype=np.float32)
    if marker_corner >= 0:
        _draw_marker(image, marker_corner, np.random.default_rng([seed, index, 1]))
    return PhantomRadiograph(
        image=np.clip(image, 0.0, 1.0).astype(np.float32),
        lesion=fields & (lesion_weight >= 0.5),
        lungs=fields,
        marker_corner=marker_corner,
    )


def _lesion(
    label: int, rng: np.random.Generator, size: int, lungs: _Lungs
) -> tuple[np.ndarray, np.ndarray]:
    """Where the lesion is (weight in [0, 1]) and the density it adds."""
    u = rng.uniform
    if label == NORMAL:
        zero = np.zeros_like(lungs.v)
        return zero, zero
    inside = _sigmoid((1.0 - lungs.radius) / 0.05)
    if label == BACTERIAL:
        # Part of one lobe of one lung, sharply bounded by the fissure.
        on_side = lungs.side == (-1.0 if u() < 0.6 else 1.0)
        fissure = u(-0.3, 0.2)
        edge = (lungs.v - fissure) / 0.03
        lobe = _sigmoid(edge if u() < 0.6 else -edge)
        patch = _sigmoid(1.5 + 1.5 * _smooth_noise(rng, size, 3))
        weight = inside * lobe * patch * on_side
        # Mottled, with air bronchograms: dark branching airways inside the opacity.
        mottle = 0.25 * _smooth_noise(rng, size, max(4, size // 8))
        bronchi = np.exp(-((_smooth_noise(rng, size, max(4, size // 8)) / 0.25) ** 2))
        return weight, u(0.13, 0.24) * weight * (1.0 + mottle - 0.6 * bronchi)
    if label == VIRAL:
        # Bilateral and perihilar: strongest beside the mediastinum, mid zone.
        spread = u(0.6, 0.9)
        perihilar = np.exp(-(((lungs.lateral + 0.6) / spread) ** 2 + (lungs.v / 0.6) ** 2))
        weight = inside * np.clip(1.5 * perihilar, 0.0, 1.0)
        cells = max(5, size // 6)
        net = np.maximum(
            np.exp(-((_smooth_noise(rng, size, cells) / 0.35) ** 2)),
            np.exp(-((_smooth_noise(rng, size, cells) / 0.35) ** 2)),
        )
        return weight, weight * (u(0.02, 0.04) + u(0.14, 0.2) * net)
    # COVID-19: peripheral (along the chest wall), lower zone, bilateral, hazy.
    peripheral = _sigmoid((lungs.radius - u(0.5, 0.62)) / 0.06)
    peripheral *= _sigmoid((lungs.lateral + 0.2) / 0.1)
    lower = _sigmoid((lungs.v - u(-0.2, 0.1)) / 0.12)
    patch = _sigmoid(1.5 + 1.2 * _smooth_noise(rng, size, 4))
    weight = inside * peripheral * lower * patch
    # Ground glass: a faint haze, mottled at a fine scale.
    haze = 1.0 + 0.35 * _smooth_noise(rng, size, max(5, size // 6))
    return weight, u(0.07, 0.11) * weight * haze


def _draw_marker(image: np.ndarray, corner: int, rng: np.random.Generator) -> None:
    """Burn a bright "R" laterality marker into ``corner`` of ``image`` (in place)."""
    size = image.shape[0]
    cell = max(1, round(size / 64))
    glyph = np.kron(_GLYPH, np.ones((cell, cell), dtype=bool))
    plate = np.pad(glyph, cell)
    height, width = plate.shape
    margin = max(1, size // 40)
    jitter_y, jitter_x = rng.integers(0, 2 * cell + 1, size=2)
    top = margin + jitter_y if corner in (0, 1) else size - margin - jitter_y - height
    left = margin + jitter_x if corner in (0, 2) else size - margin - jitter_x - width
    region = image[top : top + height, left : left + width]
    region[:] = np.where(plate, 0.95, 0.3 + 0.02 * rng.standard_normal(plate.shape))


class PhantomDataset(XrayDataset):
    """Phantom radiographs, rendered once at construction and kept in memory.

    Args:
        indices: phantom index of each image (its identity and seed).
        labels: class of each image.
        seed: the phantom's seed.
        image_size: side length S.
        noise: standard deviation of the quantum noise.
        marker_correlation: ``None`` for no shortcut marker, else the probability that
            the marker sits in the class's corner (see the module docstring).
        transform: applied to every sample.

    Raises:
        ValueError: on mismatched lengths or invalid rendering arguments.
    """

    def __init__(
        self,
        indices: Sequence[int],
        labels: Sequence[int],
        *,
        seed: int,
        image_size: int,
        noise: float = 0.03,
        marker_correlation: Optional[float] = None,
        transform: Optional[SampleTransform] = None,
    ) -> None:
        if len(indices) != len(labels):
            raise ValueError(
                f"indices and labels must have the same length, got {len(indices)} and {len(labels)}"
            )
        names = [f"phantom-{seed}-{index:06d}" for index in indices]
        super().__init__(
            labels=labels,
            class_names=CLASS_NAMES,
            patient_ids=names,
            image_ids=names,
            transform=transform,
        )
        self.marker_corners: list[int] = (
            [-1] * len(indices)
            if marker_correlation is None
            else marker_corners(labels, indices, seed=seed, correlation=marker_correlation)
        )
        rendered = [
            render_radiograph(
                label, seed=seed, index=index, image_size=image_size, noise=noise, marker_corner=c
            )
            for index, label, c in zip(indices, labels, self.marker_corners)
        ]
        shape = (len(rendered), 1, image_size, image_size)
        self.images = torch.from_numpy(np.stack([r.image for r in rendered]).reshape(shape))
        self.masks = torch.from_numpy(np.stack([r.lesion for r in rendered]).reshape(shape))

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        return self.images[index].clone(), self.masks[index].float(), True
