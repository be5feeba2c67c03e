"""Real radiographs with radiologists' lesion, device and lung masks (COVID-19 CXR segmentations).

The set (GeneralBlockchain/covid-19-chest-xray-segmentations-dataset, images from Cohen et
al.'s COVID-19 image data collection, arXiv:2006.11988; licences per image in
``metadata.csv``) holds 100 frontal radiographs of 73 patients, JPEG or PNG, RGB, RGBA or
grayscale, 0.06-14 megapixels, some with arrows or letters drawn on them. Layout::

    ROOT/
      images/         the radiographs (``structure.csv``'s ``Filename``)
      masks/          one RGBA crop per (image, class)
      structure.csv   Filename, Template Name (the class), Mask, Resolution ("WxH"),
                      Top, Left, Width, Height
      metadata.csv    filename, patientid, finding, ...

Masks: a crop's pixel belongs to its class where the crop's RGB is non-zero; the crop is
pasted at ``(Left, Top)`` into an all-zero image of the full resolution, clipped at the
border. A row with an empty ``Mask`` (14 rows, all "Monitoring Probes") adds nothing, and
two rows of the same (image, class) are united. Every image was segmented in full (lungs,
heart and airways on all 100), so every lesion mask is annotated (``mask_valid`` True); an
image without a lesion of the chosen classes is annotated lesion-free.

Three masks per image:

* the **lesion** mask: the union of ``lesion_classes``. Default: ground-glass opacities
  and consolidation (:data:`DEFAULT_LESION_CLASSES`), the parenchymal opacities of
  pneumonia, on 95 of the 100 images (GGO 93, consolidation 32). Pleural effusion (2
  images) and pneumothorax (1) are pleural findings and not signs of pneumonia; a
  pneumothorax is often a complication of ventilation, a severity cue like the devices.
  :data:`LESION_CLASSES` selects all four;
* the **device** mask: the union of :data:`DEVICE_CLASSES` (tubings 16 images,
  endotracheal tube 13, monitoring probes 12, central venous line 11, nasogastric tube
  10): the shortcut cues of a sick, ventilated patient; 29 images have one;
* the **lung** mask: left and right lung.

Images and masks are resized to ``S x S`` without keeping the aspect ratio (the image by
:func:`.folder.load_image`); each mask is built at full resolution, area-resized
(:func:`contrast_attn.functional.resize_mask`) and thresholded at 0.5, like
:mod:`.folder`'s masks, so a lesion smaller than half an output pixel disappears (one
lesion of the set, 0.001% of its image, at every size up to 224). The
decoded, resized arrays are cached in memory per (image, size, lesion classes) for the
run.

Tasks (``task``), from ``metadata.csv``'s ``finding`` (COVID-19 59, COVID-19 + ARDS 6,
Pneumocystis 11, SARS 10, Streptococcus 6, ARDS 4, Legionella 2, Klebsiella 1, No
Finding 1; no patient has two findings):

* ``"covid"`` (default): ``non_covid`` (35 images, 27 patients) vs ``covid19`` (65
  images, 46 patients): the question the collection was gathered for, binary so that
  every fold of a 5-fold cross-validation tests about 7 non-COVID images;
* ``"aetiology"``: ``covid19`` 65 images (46 patients), ``viral`` (SARS) 10 (5),
  ``bacterial`` (Streptococcus, Legionella, Klebsiella) 9 (7), ``fungal``
  (Pneumocystis) 11 (10): the paper's kind of problem, a majority class and rare ones.
  ARDS (a syndrome, not a cause) and No Finding have no aetiology: those 5 images are
  left out (95 images, 68 patients).

Evaluation: an untransformed sample carries ``device_mask`` and ``lung_mask`` (float32
``[1, S, S]`` in {0, 1}) beside ``mask``; :meth:`CovidCxrDataset.regions` gives the
three by index. A transformed sample (training augmentation moves only image and mask)
carries neither.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union, cast

import numpy as np
import torch
from PIL import Image
from typing_extensions import NotRequired

from contrast_attn.functional import resize_mask

from .dataset import Sample, SampleTransform, XrayDataset
from .folder import load_image
from .splits import patient_kfold

__all__ = [
    "ALL_CLASSES",
    "DEFAULT_COVID_CXR_DIR",
    "DEFAULT_LESION_CLASSES",
    "DEVICE_CLASSES",
    "LESION_CLASSES",
    "LUNG_CLASSES",
    "TASKS",
    "CovidCxrDataset",
    "CovidCxrRecord",
    "CovidCxrSample",
    "MaskCrop",
    "covid_cxr_dataset",
    "covid_cxr_folds",
    "full_mask",
    "read_covid_cxr",
]

DEFAULT_COVID_CXR_DIR = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "covid-cxr-segmentations"
)
LESION_CLASSES = ("Ground Glass Opacities", "Consolidation", "Pleural Effusion", "Pneumothorax")
DEFAULT_LESION_CLASSES = ("Ground Glass Opacities", "Consolidation")
DEVICE_CLASSES = (
    "Monitoring Probes",
    "Tubings",
    "Endotracheal Tube",
    "Central Venous Line",
    "Nosogastric Tube",
)
LUNG_CLASSES = ("Left Lung", "Right Lung")
ALL_CLASSES = LESION_CLASSES + DEVICE_CLASSES + LUNG_CLASSES + ("Cardiomediastinum", "Airways")

TASKS: dict[str, tuple[str, ...]] = {
    "covid": ("non_covid", "covid19"),
    "aetiology": ("covid19", "viral", "bacterial", "fungal"),
}
_AETIOLOGY = {
    "COVID-19": "covid19",
    "SARS": "viral",
    "Streptococcus": "bacterial",
    "Legionella": "bacterial",
    "Klebsiella": "bacterial",
    "Pneumocystis": "fungal",
}
_NO_AETIOLOGY = {"ARDS", "No Finding"}


@dataclass(frozen=True)
class MaskCrop:
    """One class's RGBA crop and where its top-left pixel lies in the full image."""

    path: Path
    left: int
    top: int


@dataclass(frozen=True)
class CovidCxrRecord:
    """One radiograph of the set.

    Attributes:
        path: the image file.
        patient_id: ``metadata.csv``'s ``patientid``.
        finding: ``metadata.csv``'s ``finding`` (e.g. ``"COVID-19, ARDS"``).
        size: ``(width, height)`` of the image, from ``structure.csv``.
        crops: ``(class, crop)`` pairs; a class may have several crops, or none.
    """

    path: Path
    patient_id: str
    finding: str
    size: tuple[int, int]
    crops: tuple[tuple[str, MaskCrop], ...]

    @property
    def image_id(self) -> str:
        """The image's file stem."""
        return self.path.stem

    @property
    def classes(self) -> frozenset[str]:
        """The classes with at least one crop."""
        return frozenset(name for name, _ in self.crops)


class CovidCxrSample(Sample):
    """A :class:`~.dataset.Sample` with the device and lung masks of an untransformed item."""

    device_mask: NotRequired[torch.Tensor]
    lung_mask: NotRequired[torch.Tensor]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            for row in csv.DictReader(handle)
        ]


def _int(row: dict[str, str], column: str, where: str) -> int:
    try:
        return int(float(row[column]))
    except (KeyError, ValueError) as error:
        raise ValueError(f"{where}: {column} must be a number, got {row.get(column)!r}") from error


def read_covid_cxr(root: Union[str, Path] = DEFAULT_COVID_CXR_DIR) -> list[CovidCxrRecord]:
    """Index the set: one record per image, sorted by file name.

    Args:
        root: the folder holding ``images/``, ``masks/``, ``structure.csv`` and
            ``metadata.csv``.

    Returns:
        The records.

    Raises:
        FileNotFoundError: when the folder, a table, an image or a mask it lists is missing.
        ValueError: on a malformed row, or an image without ``metadata.csv`` entry.
    """
    root = Path(root)
    structure, metadata = root / "structure.csv", root / "metadata.csv"
    for table in (structure, metadata):
        if not table.is_file():
            raise FileNotFoundError(
                f"COVID-19 CXR segmentations not found: {table} is missing. Expected the "
                "folder of GeneralBlockchain/covid-19-chest-xray-segmentations-dataset "
                f"(images/, masks/, structure.csv, metadata.csv) at {root}; place it there "
                "or pass root=<folder> (data_options) to read it from elsewhere"
            )
    meta = {row["filename"]: row for row in _read_csv(metadata)}
    crops: dict[str, list[tuple[str, MaskCrop]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for line, row in enumerate(_read_csv(structure), start=2):
        where = f"{structure}, line {line}"
        name = row.get("Filename", "")
        if not name:
            raise ValueError(f"{where}: empty Filename")
        match = re.fullmatch(r"(\d+)x(\d+)", row.get("Resolution", ""))
        if match is None:
            raise ValueError(f"{where}: Resolution must be 'WxH', got {row.get('Resolution')!r}")
        sizes.setdefault(name, (int(match[1]), int(match[2])))
        entries = crops.setdefault(name, [])
        if not row.get("Mask"):
            continue
        mask = root / row["Mask"]
        if not mask.is_file():
            raise FileNotFoundError(f"mask file not found: {mask} (listed in {where})")
        crop = MaskCrop(mask, _int(row, "Left", where), _int(row, "Top", where))
        entries.append((row["Template Name"], crop))
    records = []
    for name in sorted(crops):
        path = root / "images" / name
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path} (listed in {structure})")
        if name not in meta:
            raise ValueError(f"image {name!r} of {structure} has no row in {metadata}")
        row = meta[name]
        records.append(
            CovidCxrRecord(path, row["patientid"], row["finding"], sizes[name], tuple(crops[name]))
        )
    return records


def _tokens(finding: str) -> list[str]:
    return [t for t in re.split(r"\s*[/,]\s*", finding) if t]


def _aetiology(finding: str) -> Optional[str]:
    tokens = _tokens(finding)
    known = [_AETIOLOGY[t] for t in tokens if t in _AETIOLOGY]
    if known:
        return known[0]
    if all(t in _NO_AETIOLOGY for t in tokens):
        return None
    raise ValueError(
        f"finding {finding!r} has no aetiology in the mapping {_AETIOLOGY} "
        f"(findings without one: {sorted(_NO_AETIOLOGY)})"
    )


def _task_label(record: CovidCxrRecord, task: str) -> Optional[int]:
    """The class index of ``record`` under ``task``, ``None`` when the task leaves it out."""
    if task == "covid":
        return int("COVID-19" in _tokens(record.finding))
    aetiology = _aetiology(record.finding)
    return None if aetiology is None else TASKS[task].index(aetiology)


def full_mask(record: CovidCxrRecord, classes: Sequence[str]) -> np.ndarray:
    """The union of ``classes``' crops pasted into the full image.

    Args:
        record: the image.
        classes: class names (``Template Name``), e.g. :data:`DEVICE_CLASSES`.

    Returns:
        bool ``[H, W]`` at the image's resolution.

    Raises:
        ValueError: naming the file, when a crop cannot be read.
    """
    width, height = record.size
    mask = np.zeros((height, width), dtype=bool)
    for name, crop in record.crops:
        if name not in classes:
            continue
        try:
            with Image.open(crop.path) as image:
                rgb = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as error:
            raise ValueError(f"cannot read mask file {crop.path}: {error}") from error
        pixels = (rgb[..., 0] | rgb[..., 1] | rgb[..., 2]) != 0
        top, left = max(crop.top, 0), max(crop.left, 0)
        bottom = min(crop.top + pixels.shape[0], height)
        right = min(crop.left + pixels.shape[1], width)
        if bottom > top and right > left:
            mask[top:bottom, left:right] |= pixels[
                top - crop.top : bottom - crop.top, left - crop.left : right - crop.left
            ]
    return mask


def _resized(mask: np.ndarray, image_size: int) -> torch.Tensor:
    area = resize_mask(torch.from_numpy(mask)[None, None], (image_size, image_size))
    return (area[0] >= 0.5).float()


@functools.lru_cache(maxsize=4096)
def _decode(
    record: CovidCxrRecord, image_size: int, lesion_classes: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    image = load_image(record.path, image_size)
    return (
        image,
        _resized(full_mask(record, lesion_classes), image_size),
        _resized(full_mask(record, DEVICE_CLASSES), image_size),
        _resized(full_mask(record, LUNG_CLASSES), image_size),
    )


class CovidCxrDataset(XrayDataset):
    """The radiographs with their lesion, device and lung masks, decoded once and cached.

    Args:
        records: the images (see :func:`read_covid_cxr`).
        labels: the class index of each record.
        class_names: the name of each class index.
        image_size: side length S of the returned images and masks.
        lesion_classes: the classes whose union is the lesion mask (see the module
            docstring).
        transform: applied to every sample; a transformed sample has no device or lung mask.

    Raises:
        ValueError: on an unknown lesion class, ``image_size < 1``, or an unreadable file.
    """

    def __init__(
        self,
        records: Sequence[CovidCxrRecord],
        labels: Sequence[int],
        class_names: Sequence[str],
        *,
        image_size: int,
        lesion_classes: Sequence[str] = DEFAULT_LESION_CLASSES,
        transform: Optional[SampleTransform] = None,
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        if isinstance(lesion_classes, str) or not lesion_classes:
            raise ValueError(
                f"lesion_classes must be a non-empty sequence of class names, got {lesion_classes!r}"
            )
        unknown = [c for c in lesion_classes if c not in ALL_CLASSES]
        if unknown:
            raise ValueError(f"lesion_classes {unknown} are not classes of the set {ALL_CLASSES}")
        if len(labels) != len(records):
            raise ValueError(
                f"labels must have one entry per record, got {len(labels)} and {len(records)}"
            )
        super().__init__(
            labels=labels,
            class_names=class_names,
            patient_ids=[r.patient_id for r in records],
            image_ids=[r.image_id for r in records],
            transform=transform,
        )
        self.records = list(records)
        self.image_size = image_size
        self.lesion_classes = tuple(lesion_classes)
        self.cached = [_decode(r, image_size, self.lesion_classes) for r in self.records]

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        image, lesion, _, _ = self.cached[index]
        return image.clone(), lesion.clone(), True

    def regions(self, index: int) -> dict[str, torch.Tensor]:
        """The ``"lesion"``, ``"device"`` and ``"lung"`` masks, float32 ``[1, S, S]`` in {0, 1}."""
        _, lesion, device, lung = self.cached[index]
        return {"lesion": lesion.clone(), "device": device.clone(), "lung": lung.clone()}

    def __getitem__(self, index: int) -> CovidCxrSample:
        sample = cast(CovidCxrSample, super().__getitem__(index))
        if self.transform is None:
            regions = self.regions(index)
            sample["device_mask"], sample["lung_mask"] = regions["device"], regions["lung"]
        return sample

    def subset(self, indices: Sequence[int]) -> CovidCxrDataset:
        """The images at ``indices`` (sharing the cache), with the same transform."""
        return CovidCxrDataset(
            [self.records[i] for i in indices],
            [self.targets[i] for i in indices],
            self.class_names,
            image_size=self.image_size,
            lesion_classes=self.lesion_classes,
            transform=self.transform,
        )

    def finding_counts(self) -> Mapping[str, int]:
        """Number of images of each ``metadata.csv`` finding."""
        counts: dict[str, int] = {}
        for record in self.records:
            counts[record.finding] = counts.get(record.finding, 0) + 1
        return counts


def covid_cxr_dataset(
    root: Union[str, Path] = DEFAULT_COVID_CXR_DIR,
    *,
    image_size: int,
    task: str = "covid",
    lesion_classes: Sequence[str] = DEFAULT_LESION_CLASSES,
) -> CovidCxrDataset:
    """All images of the set that ``task`` labels, as one dataset.

    Args:
        root: the data folder (layout in the module docstring).
        image_size: side length S.
        task: ``"covid"`` or ``"aetiology"`` (see the module docstring).
        lesion_classes: the classes whose union is the lesion mask.

    Returns:
        The dataset, in file-name order.

    Raises:
        FileNotFoundError: when the folder or a file it lists is missing.
        ValueError: on an unknown task or lesion class, or a malformed table.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {tuple(TASKS)}, got {task!r}")
    labelled = [(r, _task_label(r, task)) for r in read_covid_cxr(root)]
    kept = [(record, label) for record, label in labelled if label is not None]
    return CovidCxrDataset(
        [record for record, _ in kept],
        [label for _, label in kept],
        TASKS[task],
        image_size=image_size,
        lesion_classes=lesion_classes,
    )


def covid_cxr_folds(
    dataset: CovidCxrDataset, k: int = 5, *, seed: int = 0, val_fraction: float = 0.15
) -> list[tuple[CovidCxrDataset, CovidCxrDataset, CovidCxrDataset]]:
    """Patient-grouped, stratified k-fold ``(train, val, test)`` datasets.

    Args:
        dataset: the whole set (see :func:`covid_cxr_dataset`).
        k: number of folds; every image is tested in exactly one.
        seed: seeds the assignment (:func:`.splits.patient_kfold`).
        val_fraction: share of each fold's training patients' images held out for validation.

    Returns:
        ``k`` triples of datasets sharing the decoded images.

    Raises:
        ValueError: see :func:`.splits.patient_kfold`.
    """
    folds = patient_kfold(
        dataset.targets, dataset.patient_ids, k, seed=seed, val_fraction=val_fraction
    )
    return [(dataset.subset(f.train), dataset.subset(f.val), dataset.subset(f.test)) for f in folds]
