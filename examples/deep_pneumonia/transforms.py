"""Augmentation for radiographs: joint image + mask, and SimCLR's two views.

Both are built from ``torchvision.transforms.v2`` and draw from torch's global random
generator (seeded per DataLoader worker by PyTorch), so a run is reproducible by seed.

Choices for chest radiographs, and why:

* No colour or hue operations: a radiograph is one channel of X-ray attenuation.
  Intensity varies with exposure, detector and post-processing, which brightness,
  contrast and gamma jitter imitate; blur and Gaussian noise imitate resolution and
  quantum noise. Pre-training blurs mildly (at most 0.7 pixel, one view in three):
  texture (a reticular net, ground glass, air bronchograms) tells lesions apart, and a
  strong blur teaches the features to ignore it.
* Conservative geometry: SimCLR's random resized crop keeps at least ``scale[0]`` of
  the image (default 60%, not SimCLR's 8%), with small rotations; fine-tuning uses a
  small affine map. Lesions are small and often peripheral (COVID-19's lower-zone,
  subpleural opacities): an aggressive crop removes the lesion from one view and
  makes a "positive pair" of a diseased and a healthy-looking image.
* Horizontal flips are off by default: the heart lies on the patient's left, the liver
  on the right; a flipped film shows a dextrocardia that does not occur in the data,
  mirrors the laterality marker and moves lobar findings to the other lung. Switch
  ``hflip`` on only for a deliberate experiment.

Masks move with the image on the same sampling grid (``tv_tensors.Mask``:
nearest-neighbour resampling, so they stay binary) and are untouched by the
photometric operations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from .dataset import Sample

__all__ = [
    "JointAugment",
    "RandomGamma",
    "RandomGaussianNoise",
    "SimCLRAugment",
    "TwoViews",
    "photometric_augment",
    "simclr_transform",
    "train_transform",
]


class RandomGamma:
    """Gamma jitter ``x ** g``, with ``log g`` uniform on ``log(gamma)``.

    Args:
        gamma: ``(low, high)``, positive.

    Raises:
        ValueError: when the range is not positive and ordered.
    """

    def __init__(self, gamma: tuple[float, float] = (0.8, 1.25)) -> None:
        if not 0 < gamma[0] <= gamma[1]:
            raise ValueError(f"gamma must be a range 0 < low <= high, got {gamma}")
        self.gamma = gamma

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        low, high = math.log(self.gamma[0]), math.log(self.gamma[1])
        exponent = math.exp(low + (high - low) * float(torch.rand(())))
        return image.clamp(0.0, 1.0) ** exponent


class RandomGaussianNoise:
    """With probability ``p``, add Gaussian noise of standard deviation ``sigma`` and clip.

    Args:
        sigma: noise standard deviation (intensities in [0, 1]).
        p: probability of adding noise.

    Raises:
        ValueError: when ``sigma < 0`` or ``p`` is outside [0, 1].
    """

    def __init__(self, sigma: float = 0.02, p: float = 0.5) -> None:
        if sigma < 0 or not 0 <= p <= 1:
            raise ValueError(f"need sigma >= 0 and p in [0, 1], got sigma={sigma}, p={p}")
        self.sigma, self.p = sigma, p

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) >= self.p:
            return image
        return (image + self.sigma * torch.randn_like(image)).clamp(0.0, 1.0)


def photometric_augment(
    *,
    brightness: float,
    contrast: float,
    gamma: tuple[float, float],
    blur_sigma: tuple[float, float],
    blur_p: float,
    noise_sigma: float,
    noise_p: float,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Intensity-only augmentation of a one-channel image in [0, 1].

    Brightness and contrast jitter, gamma, then (each with its probability) a Gaussian
    blur of standard deviation in ``blur_sigma`` pixels and Gaussian noise.
    """
    kernel = 2 * math.ceil(3 * blur_sigma[1]) + 1
    augment: Callable[[torch.Tensor], torch.Tensor] = v2.Compose(
        [
            v2.ColorJitter(brightness=brightness, contrast=contrast),
            RandomGamma(gamma),
            v2.RandomApply([v2.GaussianBlur(kernel, sigma=blur_sigma)], p=blur_p),
            RandomGaussianNoise(noise_sigma, p=noise_p),
        ]
    )
    return augment


class JointAugment:
    """Training augmentation of a sample: the same geometry for image and mask.

    A random affine map (small rotation, shift and zoom) applied to image and mask on
    the same sampling grid, an optional horizontal flip, then photometric jitter of the
    image only. (Not a resized crop: torchvision resizes masks with nearest-neighbour
    sampling whose grid is offset by up to half a pixel from the image's.)

    Args:
        image_size: side length S of the samples (checked: a mismatch is a configuration
            error).
        degrees: maximum rotation.
        translate: maximum shift, as a fraction of the side.
        scale: zoom range (above 1 zooms in, like a crop).
        brightness: brightness jitter factor.
        contrast: contrast jitter factor.
        gamma: gamma range.
        noise_sigma: standard deviation of the noise added with probability 0.5.
        blur_p: probability of a slight blur (standard deviation 0.1 to 1 pixel).
        hflip: flip horizontally with probability 0.5 (off: see the module docstring).
        interpolation: resampling of the image (the mask always uses nearest).

    Examples:
        >>> import torch
        >>> sample = {"image": torch.rand(1, 32, 32), "mask": torch.zeros(1, 32, 32)}
        >>> out = JointAugment(32)(sample)
        >>> out["image"].shape, out["mask"].shape
        (torch.Size([1, 32, 32]), torch.Size([1, 32, 32]))
    """

    def __init__(
        self,
        image_size: int,
        *,
        degrees: float = 7.0,
        translate: float = 0.05,
        scale: tuple[float, float] = (0.95, 1.12),
        brightness: float = 0.15,
        contrast: float = 0.15,
        gamma: tuple[float, float] = (0.85, 1.18),
        noise_sigma: float = 0.02,
        blur_p: float = 0.2,
        hflip: bool = False,
        interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR,
    ) -> None:
        self.image_size = image_size
        geometric: list[v2.Transform] = [
            v2.RandomAffine(
                degrees, translate=(translate, translate), scale=scale, interpolation=interpolation
            )
        ]
        if hflip:
            geometric.append(v2.RandomHorizontalFlip())
        self.geometric = v2.Compose(geometric)
        self.photometric = photometric_augment(
            brightness=brightness,
            contrast=contrast,
            gamma=gamma,
            blur_sigma=(0.1, 1.0),
            blur_p=blur_p,
            noise_sigma=noise_sigma,
            noise_p=0.5,
        )

    def __call__(self, sample: Sample) -> Sample:
        size = tuple(sample["image"].shape[-2:])
        if size != (self.image_size, self.image_size):
            raise ValueError(
                f"JointAugment was built for {self.image_size} x {self.image_size} images, "
                f"got a sample of {size[0]} x {size[1]}"
            )
        image, mask = self.geometric(
            tv_tensors.Image(sample["image"]), tv_tensors.Mask(sample["mask"])
        )
        out = sample.copy()
        out["image"] = self.photometric(image.as_subclass(torch.Tensor))
        out["mask"] = mask.as_subclass(torch.Tensor)
        return out


class SimCLRAugment:
    """One random view of a radiograph for contrastive pre-training (SimCLR).

    Random resized crop (conservative ``scale``) back to the input size, small
    rotation, optional flip, brightness/contrast/gamma jitter, blur and noise; no
    colour operations (see the module docstring for each choice).

    Args:
        image_size: side length S of the output view.
        scale: range of the crop's area fraction.
        ratio: range of the crop's aspect ratio.
        degrees: maximum rotation.
        brightness: brightness jitter factor.
        contrast: contrast jitter factor.
        gamma: gamma range.
        blur_sigma: range of the blur's standard deviation, in pixels.
        blur_p: probability of blurring.
        noise_sigma: standard deviation of the Gaussian noise.
        noise_p: probability of adding noise.
        hflip: flip horizontally with probability 0.5 (off by default).

    Examples:
        >>> import torch
        >>> SimCLRAugment(32)(torch.rand(1, 48, 48)).shape
        torch.Size([1, 32, 32])
    """

    def __init__(
        self,
        image_size: int,
        *,
        scale: tuple[float, float] = (0.6, 1.0),
        ratio: tuple[float, float] = (0.85, 1.18),
        degrees: float = 10.0,
        brightness: float = 0.25,
        contrast: float = 0.25,
        gamma: tuple[float, float] = (0.75, 1.33),
        blur_sigma: tuple[float, float] = (0.1, 0.7),
        blur_p: float = 0.3,
        noise_sigma: float = 0.03,
        noise_p: float = 0.5,
        hflip: bool = False,
    ) -> None:
        geometric: list[v2.Transform] = [
            v2.RandomResizedCrop(image_size, scale=scale, ratio=ratio, antialias=True),
            v2.RandomRotation(degrees, interpolation=v2.InterpolationMode.BILINEAR),
        ]
        if hflip:
            geometric.append(v2.RandomHorizontalFlip())
        self.geometric = v2.Compose(geometric)
        self.photometric = photometric_augment(
            brightness=brightness,
            contrast=contrast,
            gamma=gamma,
            blur_sigma=blur_sigma,
            blur_p=blur_p,
            noise_sigma=noise_sigma,
            noise_p=noise_p,
        )

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """A view of ``image`` (float ``[1, H, W]`` in [0, 1]) as float ``[1, S, S]``."""
        view: torch.Tensor = self.geometric(image)
        return self.photometric(view)


class TwoViews:
    """Sample transform adding ``views``: two independent augmentations of the image.

    Args:
        augment: draws one view of an image (e.g. :class:`SimCLRAugment`).

    Examples:
        >>> import torch
        >>> sample = {"image": torch.rand(1, 32, 32)}
        >>> TwoViews(SimCLRAugment(32))(sample)["views"].shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(self, augment: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.augment = augment

    def __call__(self, sample: Sample) -> Sample:
        out = sample.copy()
        out["views"] = torch.stack([self.augment(sample["image"]) for _ in range(2)])
        return out


def train_transform(image_size: int, **options: Any) -> JointAugment:
    """The fine-tuning augmentation: :class:`JointAugment` (``options`` go to it)."""
    return JointAugment(image_size, **options)


def simclr_transform(image_size: int, **options: Any) -> TwoViews:
    """The pre-training transform: two :class:`SimCLRAugment` views in ``views``.

    Examples:
        >>> import torch
        >>> simclr_transform(32)({"image": torch.rand(1, 32, 32)})["views"].shape
        torch.Size([2, 1, 32, 32])
    """
    return TwoViews(SimCLRAugment(image_size, **options))
