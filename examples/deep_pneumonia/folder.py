"""Your own radiographs: a folder of images, labels, and optional masks or boxes.

Layout::

    ROOT/
      images/      PNG or JPEG, any size, grayscale or RGB (converted to one channel)
      labels.csv   columns: image, label[, patient_id]
      masks/       optional: binary lesion masks, same stem as the image, .png/.jpg/.jpeg
      boxes.csv    optional: columns image, x, y, w, h (pixels of the original image,
                   top-left corner, several rows per image; RSNA style)

``image`` is a file name in ``images/`` (with or without its extension); ``label`` is a
class name (the class order is sorted unless ``class_names`` is given);
``patient_id`` defaults to the image's stem (one patient per image).

Annotation: an image has a valid mask (guidance on) when it has a file in ``masks/``
or rows in ``boxes.csv``. A ``boxes.csv`` row with empty x, y, w, h marks an image
annotated as lesion-free (RSNA's negative rows); an image absent from both is not
annotated (``mask_valid`` False, guidance off). A mask file and boxes are combined by union.

Resizing: images are resized to ``S x S`` (antialiased bilinear), without keeping the
aspect ratio (radiographs are close to square, and the whole field of view is kept). A
mask is binarised at the source resolution (non-zero for 0/1 masks, >= 128 for 0/255
masks, robust to JPEG artefacts), area-resized to ``S x S`` and thresholded at 0.5: an
output pixel is lesion when at least half of it was. A box marks the output pixels
whose centre lies inside the box scaled to ``S x S``. 16-bit and floating-point images
are min-max scaled to [0, 1] per image.

Errors name the file: a file listed in ``labels.csv`` that does not exist raises
:class:`FileNotFoundError` at construction; an unreadable image raises
:class:`ValueError` at construction (PIL's cheap ``verify``) or, for damage only
decoding finds, when it is loaded.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image

from .dataset import SampleTransform, XrayDataset

__all__ = [
    "IMAGE_SUFFIXES",
    "Box",
    "ImageFolderDataset",
    "ImageRecord",
    "boxes_to_mask",
    "load_image",
    "load_mask",
    "read_folder",
    "verify_image",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

Box = tuple[float, float, float, float]
PathLike = Union[str, Path]


@dataclass(frozen=True)
class ImageRecord:
    """One image of a folder data set.

    Attributes:
        path: the image file.
        label: class index.
        patient_id: the patient (splits never separate a patient's images).
        mask_path: the lesion mask file, or ``None``.
        boxes: lesion boxes ``(x, y, w, h)`` in original pixels; ``()`` when annotated
            lesion-free, ``None`` when not annotated by boxes.
    """

    path: Path
    label: int
    patient_id: str
    mask_path: Optional[Path] = None
    boxes: Optional[tuple[Box, ...]] = None

    @property
    def image_id(self) -> str:
        """The image's file stem."""
        return self.path.stem

    @property
    def annotated(self) -> bool:
        """Whether the image has a lesion mask (possibly empty)."""
        return self.mask_path is not None or self.boxes is not None


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"cannot read image file {path}: {error}") from error
    return image


def _resize(array: np.ndarray, image_size: int, resample: Image.Resampling) -> np.ndarray:
    resized = Image.fromarray(array.astype(np.float32)).resize((image_size, image_size), resample)
    return np.asarray(resized, dtype=np.float32)


def load_image(path: PathLike, image_size: int) -> torch.Tensor:
    """Read an image as one channel in [0, 1], resized to ``image_size`` squared.

    Args:
        path: a PNG or JPEG file (any mode: grayscale, RGB, palette, 16-bit).
        image_size: side length S.

    Returns:
        float32 ``[1, S, S]``.

    Raises:
        ValueError: when the file cannot be decoded (the message names it).
    """
    path = Path(path)
    with _open(path) as image:
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            array = np.asarray(image, dtype=np.float32)
            low, high = float(array.min()), float(array.max())
            array = (array - low) / (high - low if high > low else 1.0)
            resized = np.clip(_resize(array, image_size, Image.Resampling.BILINEAR), 0.0, 1.0)
        else:
            small = image.convert("L").resize((image_size, image_size), Image.Resampling.BILINEAR)
            resized = np.asarray(small, dtype=np.float32) / 255.0
    return torch.from_numpy(resized)[None]


def load_mask(path: PathLike, image_size: int) -> torch.Tensor:
    """Read a binary mask, area-resized to ``image_size`` squared and thresholded at 0.5.

    Args:
        path: a PNG or JPEG mask; 0/1 or 0/255 (any value >= 128 is lesion).
        image_size: side length S.

    Returns:
        float32 ``[1, S, S]`` in {0, 1}.

    Raises:
        ValueError: when the file cannot be decoded (the message names it).
    """
    path = Path(path)
    with _open(path) as image:
        array = np.asarray(image.convert("L"))
    binary = array > 0 if array.max() <= 1 else array >= 128
    resized = _resize(binary, image_size, Image.Resampling.BOX)
    return torch.from_numpy(resized >= 0.5).float()[None]


def boxes_to_mask(
    boxes: Sequence[Box], original_size: tuple[int, int], image_size: int
) -> torch.Tensor:
    """Rasterise lesion boxes into a mask of the resized image.

    Args:
        boxes: ``(x, y, w, h)`` in pixels of the original image (top-left corner).
        original_size: ``(width, height)`` of the original image.
        image_size: side length S of the resized image.

    Returns:
        float32 ``[1, S, S]`` in {0, 1}: pixels whose centre lies in a scaled box.

    Examples:
        >>> boxes_to_mask([(0, 0, 50, 100)], (100, 100), 4)[0]
        tensor([[1., 1., 0., 0.],
                [1., 1., 0., 0.],
                [1., 1., 0., 0.],
                [1., 1., 0., 0.]])
    """
    width, height = original_size
    centres = torch.arange(image_size, dtype=torch.float64) + 0.5
    mask = torch.zeros(image_size, image_size, dtype=torch.bool)
    for x, y, w, h in boxes:
        cols = (centres >= x * image_size / width) & (centres < (x + w) * image_size / width)
        rows = (centres >= y * image_size / height) & (centres < (y + h) * image_size / height)
        mask |= rows[:, None] & cols[None, :]
    return mask.float()[None]


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in required if c not in columns]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {missing}; it has {columns}")
        return [
            {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            for row in reader
        ]


def _find(directory: Path, name: str) -> Optional[Path]:
    """``directory/name``, or the file with stem ``name`` and an image suffix."""
    candidates = [directory / name] + [directory / (name + s) for s in IMAGE_SUFFIXES]
    return next((p for p in candidates if p.is_file()), None)


def _read_boxes(path: Path) -> dict[str, list[Box]]:
    boxes: dict[str, list[Box]] = {}
    for line, row in enumerate(_read_csv(path, ("image", "x", "y", "w", "h")), start=2):
        stem = Path(row["image"]).stem
        values = [row[c] for c in ("x", "y", "w", "h")]
        entries = boxes.setdefault(stem, [])
        if not any(values):
            continue
        try:
            x, y, w, h = (float(v) for v in values)
        except ValueError as error:
            raise ValueError(
                f"{path}, line {line}: x, y, w, h must be numbers, got {values}"
            ) from error
        if w < 0 or h < 0:
            raise ValueError(f"{path}, line {line}: w and h must be >= 0, got {w} and {h}")
        entries.append((x, y, w, h))
    return boxes


def read_folder(
    root: PathLike, *, class_names: Optional[Sequence[str]] = None
) -> tuple[list[ImageRecord], list[str]]:
    """Index a folder data set (layout in the module docstring).

    Args:
        root: the folder holding ``images/`` and ``labels.csv``.
        class_names: the class order; default: the sorted label names.

    Returns:
        ``(records, class_names)``.

    Raises:
        FileNotFoundError: when ``labels.csv`` or an image it lists is missing.
        ValueError: on a malformed CSV, a label not in ``class_names``, or a repeated image.
    """
    root = Path(root)
    labels_csv = root / "labels.csv"
    if not labels_csv.is_file():
        raise FileNotFoundError(f"labels file not found: {labels_csv}")
    rows = _read_csv(labels_csv, ("image", "label"))
    if not rows:
        raise ValueError(f"{labels_csv} lists no images")
    names = sorted({row["label"] for row in rows}) if class_names is None else list(class_names)
    index_of = {name: i for i, name in enumerate(names)}
    boxes_csv = root / "boxes.csv"
    boxes = _read_boxes(boxes_csv) if boxes_csv.is_file() else {}
    records, seen = [], set()
    for line, row in enumerate(rows, start=2):
        path = _find(root / "images", row["image"])
        if path is None:
            raise FileNotFoundError(
                f"image file not found: {root / 'images' / row['image']} "
                f"(listed in {labels_csv}, line {line})"
            )
        if row["label"] not in index_of:
            raise ValueError(
                f"{labels_csv}, line {line}: label {row['label']!r} is not one of {names}"
            )
        if path.stem in seen:
            raise ValueError(f"{labels_csv}, line {line}: image {path.stem!r} is listed twice")
        seen.add(path.stem)
        image_boxes = boxes.get(path.stem)
        records.append(
            ImageRecord(
                path=path,
                label=index_of[row["label"]],
                patient_id=row.get("patient_id") or path.stem,
                mask_path=_find(root / "masks", path.stem),
                boxes=None if image_boxes is None else tuple(image_boxes),
            )
        )
    return records, names


def verify_image(path: Path) -> None:
    """Check cheaply that ``path`` is a readable image (PIL ``verify``, no decoding).

    Raises:
        ValueError: naming the file when it is not.
    """
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, ValueError, SyntaxError) as error:
        raise ValueError(f"cannot read image file {path}: {error}") from error


class ImageFolderDataset(XrayDataset):
    """Images and masks from files, decoded on access or cached in memory.

    Args:
        records: the images (see :func:`read_folder`).
        class_names: the name of each class index.
        image_size: side length S of the returned images and masks.
        cache: decode and resize every image at construction and keep them in memory
            (fast epochs; ``S * S * 4`` bytes per image). Otherwise images are verified
            at construction and decoded on each access.
        transform: applied to every sample.

    Raises:
        ValueError: naming the file, when an image or mask cannot be read.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        class_names: Sequence[str],
        *,
        image_size: int,
        cache: bool = False,
        transform: Optional[SampleTransform] = None,
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        super().__init__(
            labels=[r.label for r in records],
            class_names=class_names,
            patient_ids=[r.patient_id for r in records],
            image_ids=[r.image_id for r in records],
            transform=transform,
        )
        self.records = list(records)
        self.image_size = image_size
        if not cache:
            for record in self.records:
                verify_image(record.path)
                if record.mask_path is not None:
                    verify_image(record.mask_path)
        self.cached: Optional[list[tuple[torch.Tensor, torch.Tensor, bool]]] = (
            [self._decode(r) for r in self.records] if cache else None
        )

    def _decode(self, record: ImageRecord) -> tuple[torch.Tensor, torch.Tensor, bool]:
        image = load_image(record.path, self.image_size)
        mask = torch.zeros_like(image)
        if record.mask_path is not None:
            mask = load_mask(record.mask_path, self.image_size)
        if record.boxes:
            with Image.open(record.path) as original:
                size = original.size
            mask = torch.maximum(mask, boxes_to_mask(record.boxes, size, self.image_size))
        return image, mask, record.annotated

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        if self.cached is not None:
            image, mask, valid = self.cached[index]
            return image.clone(), mask.clone(), valid
        return self._decode(self.records[index])
