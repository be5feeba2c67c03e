"""Your own radiographs: a folder of images, labels, and optional masks or boxes.

Two layouts. With a ``labels.csv``::

    ROOT/
      images/      PNG, JPEG or DICOM, any size (see :mod:`.image_io`)
      labels.csv   columns: image, label[, patient_id] (UTF-8, with or without a BOM)
      masks/       optional: lesion masks, same stem as the image, .png/.jpg/.jpeg
      boxes.csv    optional: columns image, x, y, w, h (pixels of the image as displayed,
                   top-left corner, several rows per image; RSNA style)

``image`` is a file name in ``images/`` (with or without its extension); ``label`` is a
class name; ``patient_id`` defaults to the image's stem (one patient per image).

Or class folders, torchvision ``ImageFolder``'s layout, without ``labels.csv``::

    ROOT/
      <class>/     the images of one class (.png, .jpg, .jpeg, .dcm, .dicom; sub-folders
                   are searched too)
      masks/       optional, as above (``masks`` is not a class)
      boxes.csv    optional, as above

Every image is its own patient; image stems must be unique across classes. Hidden
files are skipped; other files without an image suffix are skipped with a warning that
lists them. In both layouts the class order is sorted unless ``class_names`` is given.

Annotation: an image has a valid mask (guidance on) when it has a file in ``masks/``
or rows in ``boxes.csv``. A ``boxes.csv`` row with empty x, y, w, h marks an image
annotated as lesion-free (RSNA's negative rows); an image absent from both is not
annotated (``mask_valid`` False, guidance off). A mask file and boxes are combined by union.
Which mask pixels are lesion: :func:`.image_io.read_mask` (default: not black and not
transparent; binary, grayscale, 16-bit, RGB, RGBA and palette masks alike), or a colour,
index or threshold (``mask_colour``, ``mask_index``, ``mask_threshold``).

Resizing: images are resized to ``S x S`` (antialiased bilinear), without keeping the
aspect ratio (radiographs are close to square, and the whole field of view is kept). A
mask, of any size, is read at its own resolution, area-resized to ``S x S`` and
thresholded at 0.5: an output pixel is lesion when at least half of it was. A box marks
the output pixels whose centre lies inside the box scaled to ``S x S``.

Checks before training: :func:`read_folder` decodes every image and mask once
(:func:`check_records`): unreadable or truncated files, files over Pillow's
decompression-bomb limit, DICOM without pydicom, masks that break their rule or look
like images, masks whose size is the image's transposed (an orientation mismatch), and
boxes outside their image. All problems are raised together in one
:class:`BadFilesError` that lists every file, unless ``skip_bad_files`` is set: then
those images are left out, with a warning that lists them.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from PIL import Image

from .dataset import SampleTransform, XrayDataset
from .image_io import (
    IMAGE_SUFFIXES,
    ImageReadError,
    MaskRule,
    read_mask,
    read_radiograph,
    resize_to,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "BadFilesError",
    "Box",
    "ImageFolderDataset",
    "ImageRecord",
    "boxes_to_mask",
    "check_records",
    "load_image",
    "load_mask",
    "read_folder",
    "verify_image",
]

MASK_SUFFIXES = (".png", ".jpg", ".jpeg")
RESERVED_FOLDERS = ("masks",)

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
        boxes: lesion boxes ``(x, y, w, h)`` in pixels of the image as displayed;
            ``()`` when annotated lesion-free, ``None`` when not annotated by boxes.
        mask_rule: which pixels of the mask file are lesion.
    """

    path: Path
    label: int
    patient_id: str
    mask_path: Optional[Path] = None
    boxes: Optional[tuple[Box, ...]] = None
    mask_rule: MaskRule = field(default_factory=MaskRule)

    @property
    def image_id(self) -> str:
        """The image's file stem."""
        return self.path.stem

    @property
    def annotated(self) -> bool:
        """Whether the image has a lesion mask (possibly empty)."""
        return self.mask_path is not None or self.boxes is not None


class BadFilesError(ValueError):
    """Images or masks of a data set that cannot be used, all listed in the message.

    Attributes:
        bad: ``(record, reason)`` for each bad image.
    """

    def __init__(self, bad: Sequence[tuple[ImageRecord, str]], total: int) -> None:
        self.bad = list(bad)
        lines = "\n".join(f"  {record.path}: {reason}" for record, reason in self.bad)
        super().__init__(
            f"{len(self.bad)} of {total} images cannot be used:\n{lines}\n"
            "Fix or remove these files, or leave them out with skip_bad_files=True "
            "(--skip-bad-files)."
        )


def _resized_image(array: np.ndarray, image_size: int) -> torch.Tensor:
    resized = resize_to(array, image_size, Image.Resampling.BILINEAR)
    return torch.from_numpy(np.clip(resized, 0.0, 1.0))[None]


def _resized_mask(lesion: np.ndarray, image_size: int) -> torch.Tensor:
    return torch.from_numpy(resize_to(lesion, image_size, Image.Resampling.BOX) >= 0.5).float()[
        None
    ]


def load_image(path: PathLike, image_size: int) -> torch.Tensor:
    """Read a radiograph as one channel in [0, 1], resized to ``image_size`` squared.

    Args:
        path: a PNG, JPEG or DICOM file (conversions: :func:`.image_io.read_radiograph`).
        image_size: side length S.

    Returns:
        float32 ``[1, S, S]``.

    Raises:
        ImageReadError: a :class:`ValueError` naming the file, when it cannot be read.
    """
    return _resized_image(read_radiograph(path), image_size)


def load_mask(path: PathLike, image_size: int, rule: Optional[MaskRule] = None) -> torch.Tensor:
    """Read a lesion mask, area-resized to ``image_size`` squared and thresholded at 0.5.

    Args:
        path: a PNG or JPEG mask of any size and mode (see :func:`.image_io.read_mask`).
        image_size: side length S.
        rule: which pixels are lesion; default: not black and not transparent.

    Returns:
        float32 ``[1, S, S]`` in {0, 1}.

    Raises:
        ImageReadError: a :class:`ValueError` naming the file, when it cannot be read.
    """
    return _resized_mask(read_mask(path, rule), image_size)


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
    # utf-8-sig: Excel saves "CSV UTF-8" with a byte-order mark before the first column.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in required if c not in columns]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {missing}; it has {columns}")
        return [
            {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            for row in reader
        ]


def _find(directory: Path, name: str, suffixes: Sequence[str]) -> Optional[Path]:
    """``directory/name``, or the file with stem ``name`` and one of ``suffixes``."""
    candidates = [directory / name] + [directory / (name + s) for s in suffixes]
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


def _labelled_images(root: Path) -> list[tuple[Path, str, str, str]]:
    """``(image, label, patient, where it is listed)`` of the labels.csv layout."""
    labels_csv = root / "labels.csv"
    rows = _read_csv(labels_csv, ("image", "label"))
    if not rows:
        raise ValueError(f"{labels_csv} lists no images")
    found = []
    for line, row in enumerate(rows, start=2):
        path = _find(root / "images", row["image"], IMAGE_SUFFIXES)
        if path is None:
            raise FileNotFoundError(
                f"image file not found: {root / 'images' / row['image']} "
                f"(listed in {labels_csv}, line {line})"
            )
        where = f"{labels_csv}, line {line}"
        found.append((path, row["label"], row.get("patient_id") or path.stem, where))
    return found


def _class_folder_images(root: Path, folders: Sequence[Path]) -> list[tuple[Path, str, str, str]]:
    """``(image, label, patient, where it is listed)`` of the class-folder layout."""
    found, ignored = [], []
    for folder in folders:
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            raise ValueError(
                f"class folder {folder} holds no image ({', '.join(IMAGE_SUFFIXES)} files)"
            )
        ignored += [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        found += [(p, folder.name, p.stem, str(folder)) for p in images]
    if ignored:
        warnings.warn(
            f"{len(ignored)} file(s) without an image suffix are not part of the data set: "
            + ", ".join(str(p) for p in ignored),
            stacklevel=3,
        )
    return found


def read_folder(
    root: PathLike,
    *,
    class_names: Optional[Sequence[str]] = None,
    skip_bad_files: bool = False,
    mask_colour: Any = None,
    mask_index: Any = None,
    mask_threshold: Optional[float] = None,
) -> tuple[list[ImageRecord], list[str]]:
    """Index a folder data set and check every file (layouts in the module docstring).

    Args:
        root: the folder holding ``images/`` and ``labels.csv``, or class folders.
        class_names: the class order; default: the sorted label (or folder) names.
        skip_bad_files: leave out images whose image, mask or boxes fail the checks
            (with a warning that lists them) instead of raising.
        mask_colour: read masks by colour (a name, ``#rrggbb`` or an RGB triple).
        mask_index: read masks by palette index or gray level (one or several).
        mask_threshold: read masks as lesion where the brightest channel is >= this.

    Returns:
        ``(records, class_names)``.

    Raises:
        FileNotFoundError: when ``root`` has neither ``labels.csv`` nor class folders,
            or an image ``labels.csv`` lists is missing.
        ValueError: on a malformed CSV, a label not in ``class_names``, a repeated image,
            an empty class folder, or an invalid mask rule.
        BadFilesError: listing every image, mask or box that fails the checks (a
            :class:`ValueError`), unless ``skip_bad_files``.
    """
    root = Path(root)
    rule = MaskRule(colour=mask_colour, index=mask_index, threshold=mask_threshold)
    folders = (
        sorted(
            p
            for p in root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name not in RESERVED_FOLDERS
        )
        if root.is_dir()
        else []
    )
    if (root / "labels.csv").is_file():
        found = _labelled_images(root)
    elif folders and not (root / "images").is_dir():
        found = _class_folder_images(root, folders)
    else:
        raise FileNotFoundError(
            f"labels file not found: {root / 'labels.csv'} (a folder data set has "
            "images/ with labels.csv, or one folder of images per class)"
        )
    names = (
        sorted({label for _, label, _, _ in found}) if class_names is None else list(class_names)
    )
    index_of = {name: i for i, name in enumerate(names)}
    boxes_csv = root / "boxes.csv"
    boxes = _read_boxes(boxes_csv) if boxes_csv.is_file() else {}
    records: list[ImageRecord] = []
    seen: dict[str, Path] = {}
    for path, label, patient, where in found:
        if label not in index_of:
            raise ValueError(f"{where}: label {label!r} is not one of {names}")
        if path.stem in seen:
            raise ValueError(
                f"{where}: image {path.stem!r} is listed twice ({seen[path.stem]} and {path})"
            )
        seen[path.stem] = path
        image_boxes = boxes.get(path.stem)
        records.append(
            ImageRecord(
                path=path,
                label=index_of[label],
                patient_id=patient,
                mask_path=_find(root / "masks", path.stem, MASK_SUFFIXES),
                boxes=None if image_boxes is None else tuple(image_boxes),
                mask_rule=rule,
            )
        )
    return _without_bad(records, skip_bad_files), names


def _without_bad(records: list[ImageRecord], skip_bad_files: bool) -> list[ImageRecord]:
    bad = check_records(records)
    if not bad:
        return records
    if not skip_bad_files:
        raise BadFilesError(bad, len(records))
    left_out = {record.path for record, _ in bad}
    kept = [r for r in records if r.path not in left_out]
    if not kept:
        raise BadFilesError(bad, len(records))
    warnings.warn(
        f"skip_bad_files: {len(bad)} of {len(records)} images are left out:\n"
        + "\n".join(f"  {record.path}: {reason}" for record, reason in bad),
        stacklevel=3,
    )
    return kept


def _problems(record: ImageRecord) -> Optional[str]:
    """Why ``record`` cannot be used, or ``None`` (decodes its image and mask once)."""
    problems = []
    try:
        height, width = read_radiograph(record.path).shape
    except ImageReadError as error:
        return error.reason
    if record.mask_path is not None:
        try:
            shape = read_mask(record.mask_path, record.mask_rule).shape
        except ImageReadError as error:
            problems.append(f"mask {record.mask_path}: {error.reason}")
        else:
            if height != width and shape == (width, height):
                problems.append(
                    f"mask {record.mask_path} is {shape[1]} x {shape[0]} but the image, "
                    f"oriented, is {width} x {height}: a mask of the unrotated image?"
                )
    for x, y, w, h in record.boxes or ():
        if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
            problems.append(
                f"box (x={x}, y={y}, w={w}, h={h}) exceeds the {width} x {height} image"
            )
    return "; ".join(problems) or None


def check_records(
    records: Iterable[ImageRecord], *, workers: Optional[int] = None
) -> list[tuple[ImageRecord, str]]:
    """Decode every image and mask of ``records`` and say which cannot be used.

    Checks (see the module docstring): the image decodes completely; the mask decodes,
    fits its rule and is not the image's size transposed; boxes lie inside the image.

    Args:
        records: the images to check.
        workers: decoding threads (default: up to 8, one per CPU).

    Returns:
        ``(record, reason)`` for each bad image, in the order of ``records``.
    """
    records = list(records)
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = list(pool.map(_problems, records))
    return [(record, reason) for record, reason in zip(records, reasons) if reason is not None]


def verify_image(path: Path) -> None:
    """Check cheaply that ``path`` is a readable image (PIL ``verify``, no decoding).

    A truncated JPEG passes; :func:`check_records` decodes and finds it.

    Raises:
        ImageReadError: a :class:`ValueError` naming the file when it is not.
    """
    if Path(path).suffix.lower() in (".dcm", ".dicom"):
        return
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageReadError(path, str(error)) from error


class ImageFolderDataset(XrayDataset):
    """Images and masks from files, decoded on access or cached in memory.

    Args:
        records: the images (see :func:`read_folder`, which checks every file).
        class_names: the name of each class index.
        image_size: side length S of the returned images and masks.
        cache: decode and resize every image at construction and keep them in memory
            (fast epochs; ``S * S * 4`` bytes per image). Otherwise images are verified
            at construction and decoded on each access.
        transform: applied to every sample.

    Raises:
        BadFilesError: listing every image or mask that cannot be read (a
            :class:`ValueError`).
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
        decoded, bad = [], []
        for record in self.records:
            try:
                if cache:
                    decoded.append(self._decode(record))
                else:
                    for path in (record.path, record.mask_path):
                        if path is not None:
                            verify_image(path)
            except ImageReadError as error:
                bad.append((record, str(error)))
        if bad:
            raise BadFilesError(bad, len(self.records))
        self.cached: Optional[list[tuple[torch.Tensor, torch.Tensor, bool]]] = (
            decoded if cache else None
        )

    def _decode(self, record: ImageRecord) -> tuple[torch.Tensor, torch.Tensor, bool]:
        array = read_radiograph(record.path)
        image = _resized_image(array, self.image_size)
        mask = torch.zeros_like(image)
        if record.mask_path is not None:
            mask = load_mask(record.mask_path, self.image_size, record.mask_rule)
        if record.boxes:
            height, width = array.shape
            mask = torch.maximum(
                mask, boxes_to_mask(record.boxes, (width, height), self.image_size)
            )
        return image, mask, record.annotated

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        if self.cached is not None:
            image, mask, valid = self.cached[index]
            return image.clone(), mask.clone(), valid
        return self._decode(self.records[index])
