"""Reading radiographs and lesion masks from files: PNG, JPEG and DICOM.

Radiographs (:func:`read_radiograph`) become one channel of float32 in [0, 1] at the
file's own resolution, oriented as a viewer shows them:

* PNG and JPEG, any mode. The EXIF orientation tag is applied
  (:func:`PIL.ImageOps.exif_transpose`). 8-bit grayscale, palette, RGB and RGBA images
  are converted to luminance (ITU-R 601-2, alpha ignored) and divided by 255; 16-bit,
  32-bit integer and floating-point images are min-max scaled per image.
* DICOM (``.dcm``/``.dicom``, or any file with the ``DICM`` preamble), through the
  optional extra ``pip install contrast-attn[dicom]`` (pydicom). The modality LUT
  (rescale slope and intercept) is applied, then the first VOI transform present: a VOI
  LUT sequence, scaled by its output range, or the window ``WindowCenter`` c /
  ``WindowWidth`` w with ``VOILUTFunction`` (LINEAR by default, DICOM PS3.3 C.11.2.1.2):

  .. math::

      y = \\operatorname{clip}\\Big(\\frac{x - (c - 0.5)}{w - 1} + 0.5,\\ 0,\\ 1\\Big).

  Without either, the image is min-max scaled. ``MONOCHROME1`` images (white is low) are
  inverted, :math:`y \\mapsto 1 - y`, so that bone is bright in every image.

Masks (:func:`read_mask`) become a boolean array at the file's resolution, by one rule
(:class:`MaskRule`):

* default: a pixel is lesion when it is **not black and not transparent**: any colour
  channel non-zero and, where the file has transparency (RGBA, LA, a palette with a
  transparent entry), alpha non-zero. This reads binary (0/1 or 0/255), grayscale, 16-bit,
  RGB, RGBA and palette (VOC-style) masks alike; a label map's classes are all lesion.
  JPEG masks are lossy: there a pixel is lesion when its brightest channel is at least
  half the maximum (128), which ignores compression artefacts.
* ``MaskRule(colour=...)``: lesion where the pixel's RGB equals a colour (a name or
  ``#rrggbb`` as :func:`PIL.ImageColor.getrgb` reads it, or an RGB triple), e.g. one
  class of a colour-coded annotation export.
* ``MaskRule(index=...)``: lesion where the pixel's palette index, or gray level of a
  single-channel label map, is one of the given values.

Colour and index rules need lossless files (not JPEG).

Errors name the file: :class:`ImageReadError` (a :class:`ValueError`) for a file that
cannot be decoded (including a truncated JPEG), that exceeds Pillow's
decompression-bomb limit (with what to do), that is DICOM without pydicom installed, or
that breaks the mask rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from PIL import Image, ImageColor, ImageOps

__all__ = [
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "MaskRule",
    "is_dicom",
    "read_mask",
    "read_radiograph",
    "resize_to",
]

DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *DICOM_SUFFIXES)
JPEG_FORMATS = ("JPEG", "MPO")
DICOM_EXTRA = "DICOM needs the extra: pip install contrast-attn[dicom] (pydicom)"

PathLike = Union[str, Path]


class ImageReadError(ValueError):
    """An image or mask file that cannot be read; the message names the file.

    Attributes:
        path: the file.
        reason: what is wrong with it.
    """

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read {self.path}: {reason}")


@dataclass(frozen=True)
class MaskRule:
    """Which pixels of a mask file are lesion (see the module docstring).

    At most one of the three is given; none is the default rule.

    Args:
        colour: lesion where the pixel's RGB equals this colour: a name or ``#rrggbb``
            (:func:`PIL.ImageColor.getrgb`) or an RGB triple of 0-255 integers.
        index: lesion where the palette index or gray level is one of these values.
        threshold: lesion where the brightest channel is >= this value (a soft mask,
            e.g. 0-255 probabilities; 128 is the rule for JPEG masks).

    Raises:
        ValueError: when more than one is given, or one is invalid.

    Examples:
        >>> MaskRule(colour="red")
        MaskRule(colour=(255, 0, 0), index=None, threshold=None)
        >>> MaskRule(index=1).index
        (1,)
    """

    colour: Optional[Any] = None
    index: Optional[Any] = None
    threshold: Optional[float] = None

    def __post_init__(self) -> None:
        given = {k: v for k, v in vars(self).items() if v is not None}
        if len(given) > 1:
            raise ValueError(f"give one of mask colour, index and threshold, got {given}")
        if self.colour is not None:
            object.__setattr__(self, "colour", _rgb(self.colour))
        if self.index is not None:
            values = (self.index,) if isinstance(self.index, int) else tuple(self.index)
            if not values or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
            ):
                raise ValueError(
                    f"mask index must be a non-negative integer or a non-empty sequence of "
                    f"them, got {self.index!r}"
                )
            object.__setattr__(self, "index", values)
        if self.threshold is not None and not (
            isinstance(self.threshold, (int, float))
            and not isinstance(self.threshold, bool)
            and 0 < self.threshold < float("inf")
        ):
            raise ValueError(f"mask threshold must be a positive number, got {self.threshold!r}")

    @property
    def default(self) -> bool:
        """Whether this is the default rule (not black and not transparent)."""
        return self.colour is None and self.index is None and self.threshold is None


def _rgb(colour: Any) -> tuple[int, int, int]:
    if isinstance(colour, str):
        try:
            rgb = ImageColor.getrgb(colour)
        except ValueError as error:
            raise ValueError(f"mask colour {colour!r} is not a colour name or #rrggbb") from error
        return rgb[0], rgb[1], rgb[2]
    values = tuple(colour) if isinstance(colour, Sequence) else ()
    if len(values) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in values):
        raise ValueError(f"mask colour must be a name or 3 integers in [0, 255], got {colour!r}")
    return values[0], values[1], values[2]


def is_dicom(path: PathLike) -> bool:
    """Whether ``path`` is a DICOM file: by suffix, or by its ``DICM`` preamble."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _open(path: Path) -> Image.Image:
    """Open and fully decode ``path``, oriented by its EXIF tag."""
    try:
        with Image.open(path) as image:
            image.load()
            oriented = ImageOps.exif_transpose(image)
            oriented.format = image.format
            return oriented
    except Image.DecompressionBombError as error:
        raise ImageReadError(
            path,
            f"{error}. If you trust the file, raise Pillow's limit before reading, e.g. "
            "PIL.Image.MAX_IMAGE_PIXELS = 400_000_000 (None disables it), or store the "
            "image at a lower resolution",
        ) from error
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageReadError(path, str(error)) from error


def _min_max(array: np.ndarray, path: Path) -> np.ndarray:
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ImageReadError(path, "the image holds NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    return ((array - low) / (high - low if high > low else 1.0)).astype(np.float32)


def read_radiograph(path: PathLike) -> np.ndarray:
    """Read a radiograph as one channel in [0, 1] (conversions in the module docstring).

    Args:
        path: a PNG, JPEG or DICOM file.

    Returns:
        float32 ``[H, W]`` in [0, 1], at the file's resolution, EXIF orientation applied.

    Raises:
        ImageReadError: naming the file, when it cannot be decoded, exceeds Pillow's
            decompression-bomb limit, or is DICOM and pydicom is not installed.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).save(path)
        >>> read_radiograph(path)
        array([[0., 1.]], dtype=float32)
    """
    path = Path(path)
    if is_dicom(path):
        return _read_dicom(path)
    image = _open(path)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _min_max(np.asarray(image), path)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError as error:
        raise ImageReadError(path, DICOM_EXTRA) from error
    try:
        from pydicom.pixels import processing as lut
    except ImportError:  # pydicom 2
        from pydicom.pixel_data_handlers import util as lut  # type: ignore[no-redef]
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as error:  # pydicom raises many types (missing codecs among them)
        raise ImageReadError(path, f"DICOM pixel data cannot be decoded: {error}") from error
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise ImageReadError(path, f"the DICOM file holds {frames} frames; expected one image")
    if samples == 3:
        luma = np.asarray(pixels, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])
        return _min_max(luma, path)
    values = np.asarray(lut.apply_modality_lut(pixels, ds), dtype=np.float64)
    if "VOILUTSequence" in ds:
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        scaled = np.asarray(lut.apply_voi_lut(values, ds), dtype=np.float64) / (
            2.0 ** int(descriptor[2]) - 1.0
        )
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        scaled = _window(values, ds)
    else:
        scaled = _min_max(values, path).astype(np.float64)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        scaled = 1.0 - scaled
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def _first(value: Any) -> float:
    return (
        float(value[0])
        if isinstance(value, Sequence) and not isinstance(value, str)
        else float(value)
    )


def _window(values: np.ndarray, ds: Any) -> np.ndarray:
    centre, width = _first(ds.WindowCenter), max(_first(ds.WindowWidth), 1.0)
    function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - centre) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - centre) / width + 0.5, 0.0, 1.0)
    return np.clip((values - (centre - 0.5)) / max(width - 1.0, 1.0) + 0.5, 0.0, 1.0)


def _channels(image: Image.Image) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Colour values ``[H, W, C]`` and alpha ``[H, W]`` (None when opaque) of a mask."""
    if image.mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif image.mode in ("PA", "CMYK", "YCbCr", "HSV", "LAB", "RGBX"):
        image = image.convert("RGBA" if image.mode == "PA" else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    array = np.asarray(image)
    if array.ndim == 2:
        return array[..., None], None
    if image.mode in ("RGBA", "RGBa", "LA", "La"):
        return array[..., :-1], array[..., -1]
    return array, None


def _not_a_mask(values: np.ndarray) -> Optional[str]:
    """Why a default-rule mask looks like an image rather than a mask, or ``None``.

    A mask is black plus one or a few lesion values; anti-aliased edges add more values
    on few pixels. More than 16 distinct values with more than 20 % of the pixels neither
    black nor the brightest value is an image saved as a mask, or a soft mask.
    """
    flat = values.ravel()
    distinct = np.bincount(flat) if flat.dtype.kind == "u" else np.unique(flat)
    if np.count_nonzero(distinct) <= 16:
        return None
    top = flat.max()
    share = float(np.mean((flat != 0) & (flat != top)))
    if share <= 0.2:
        return None
    return (
        f"it does not look like a mask: {share:.0%} of its pixels are neither 0 nor its "
        f"maximum {top}; expected a binary mask, a label map or a palette image (for a soft "
        "mask give a threshold, MaskRule(threshold=...))"
    )


def read_mask(path: PathLike, rule: Optional[MaskRule] = None) -> np.ndarray:
    """Read a lesion mask by ``rule`` (default: not black and not transparent is lesion).

    Args:
        path: a PNG (binary, grayscale, 16-bit, RGB, RGBA, palette) or JPEG mask file.
        rule: which pixels are lesion (see :class:`MaskRule` and the module docstring).

    Returns:
        bool ``[H, W]`` at the file's resolution, EXIF orientation applied.

    Raises:
        ImageReadError: naming the file, when it cannot be decoded, holds negative or
            non-finite values, does not look like a mask under the default rule, or does
            not fit the rule (an index rule for a colour image, a colour or index rule
            for a JPEG).

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "m.png"
        >>> rgb = np.zeros((1, 3, 3), dtype=np.uint8)
        >>> rgb[0, 1] = (255, 0, 0)
        >>> rgb[0, 2] = (0, 255, 0)
        >>> Image.fromarray(rgb).save(path)
        >>> read_mask(path)
        array([[False,  True,  True]])
        >>> read_mask(path, MaskRule(colour="red"))
        array([[False,  True, False]])
    """
    path = Path(path)
    rule = MaskRule() if rule is None else rule
    image = _open(path)
    lossy = image.format in JPEG_FORMATS
    if lossy and (rule.colour is not None or rule.index is not None):
        raise ImageReadError(path, f"a mask read by {rule} must be lossless (PNG), not JPEG")
    if rule.index is not None:
        if image.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L", "I;16N"):
            raise ImageReadError(
                path,
                f"mask index {list(rule.index)} needs a palette or single-channel mask, "
                f"got mode {image.mode}",
            )
        return np.isin(np.asarray(image), rule.index)
    palette = image.mode in ("P", "PA")
    values, alpha = _channels(image)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ImageReadError(path, "the mask holds NaN or infinite values")
    if values.dtype.kind in "if" and values.min() < 0:
        raise ImageReadError(path, f"mask values must be >= 0, got {values.min()}")
    brightest = values.max(axis=-1)
    if rule.colour is not None:
        if values.shape[-1] != 3:
            raise ImageReadError(
                path, f"mask colour {rule.colour} needs a colour mask, got mode {image.mode}"
            )
        lesion = (values == np.array(rule.colour, dtype=values.dtype)).all(axis=-1)
    elif rule.threshold is not None:
        lesion = brightest >= rule.threshold
    elif lossy:
        lesion = brightest >= 128
    else:
        reason = None if palette else _not_a_mask(brightest)
        if reason is not None:
            raise ImageReadError(path, reason)
        lesion = brightest > 0
    result: np.ndarray = lesion if alpha is None else lesion & (alpha > 0)
    return result


def resize_to(array: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
    """Resize a 2-D array to ``size x size`` in float32 (Pillow, antialiased)."""
    resized = Image.fromarray(array.astype(np.float32)).resize((size, size), resample)
    return np.array(resized, dtype=np.float32)
