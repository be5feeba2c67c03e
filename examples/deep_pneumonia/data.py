"""Train/validation/test data sets from the phantom, real radiographs or a folder.

:func:`build_datasets` is the one entry point of the pipeline's data stage. Every data
set yields :class:`~.dataset.Sample` dicts and exposes ``targets`` and ``class_names``
(see :mod:`.dataset`); every split is grouped by patient and stratified by class
(:mod:`.splits`), deterministic by seed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from .covid_cxr import DEFAULT_COVID_CXR_DIR, DEFAULT_LESION_CLASSES, covid_cxr_dataset
from .dataset import XrayDataset
from .folder import ImageFolderDataset, ImageRecord, read_folder
from .hannover import DEFAULT_HANNOVER_DIR, hannover_records
from .phantom import CLASS_NAMES, DEFAULT_CLASS_FRACTIONS, PhantomDataset, phantom_labels
from .splits import DEFAULT_SPLIT_FRACTIONS, grouped_stratified_split, patient_kfold

__all__ = ["DataSplits", "build_datasets"]

# ``(index, k)``: fold ``index`` of a k-fold cross-validation.
Fold = Optional[tuple[int, int]]


@dataclass(frozen=True)
class DataSplits:
    """The three splits and the class names they share."""

    train: XrayDataset
    val: XrayDataset
    test: XrayDataset
    class_names: list[str]


def _split(
    labels: Sequence[int],
    groups: Sequence[str],
    fractions: Sequence[float],
    seed: int,
    fold: Fold = None,
) -> list[list[int]]:
    """Train/val/test indices: one grouped stratified split, or fold ``fold`` of a k-fold."""
    if len(fractions) != 3:
        raise ValueError(f"split_fractions must be (train, val, test), got {tuple(fractions)}")
    if fold is not None:
        index, k = fold
        val_fraction = fractions[1] / (fractions[0] + fractions[1])
        return list(patient_kfold(labels, groups, k, seed=seed, val_fraction=val_fraction)[index])
    parts = grouped_stratified_split(labels, groups, fractions, seed=seed)
    empty = [name for name, part in zip(("train", "val", "test"), parts) if not part]
    if empty:
        raise ValueError(
            f"the {'/'.join(empty)} split is empty: {len(set(groups))} patient(s) are too few "
            f"for split_fractions {tuple(fractions)}"
        )
    return parts


def _synthetic(
    *,
    image_size: int,
    seed: int,
    fold: Fold = None,
    num_images: int = 600,
    class_fractions: Sequence[float] = DEFAULT_CLASS_FRACTIONS,
    shortcut_markers: bool = False,
    marker_correlation: float = 0.9,
    val_marker_correlation: Optional[float] = None,
    noise: float = 0.03,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
) -> DataSplits:
    labels = phantom_labels(num_images, class_fractions, seed=seed)
    parts = _split(labels, [str(i) for i in range(num_images)], split_fractions, seed, fold)

    def make(indices: list[int], correlation: float) -> PhantomDataset:
        return PhantomDataset(
            indices,
            [labels[i] for i in indices],
            seed=seed,
            image_size=image_size,
            noise=noise,
            marker_correlation=correlation if shortcut_markers else None,
        )

    # Validation is internal by default (same hospital, same shortcut as training); the
    # test split is external: its marker is independent of the class.
    train, val, test = parts
    return DataSplits(
        make(train, marker_correlation),
        make(val, marker_correlation if val_marker_correlation is None else val_marker_correlation),
        make(test, 0.0),
        list(CLASS_NAMES),
    )


def _from_records(
    records: Sequence[ImageRecord],
    class_names: list[str],
    *,
    image_size: int,
    seed: int,
    split_fractions: Sequence[float],
    cache: bool,
    fold: Fold,
) -> DataSplits:
    labels, patients = [r.label for r in records], [r.patient_id for r in records]
    train, val, test = (
        ImageFolderDataset(
            [records[i] for i in part], class_names, image_size=image_size, cache=cache
        )
        for part in _split(labels, patients, split_fractions, seed, fold)
    )
    return DataSplits(train, val, test, class_names)


def _hannover(
    *,
    image_size: int,
    seed: int,
    fold: Fold = None,
    root: Union[str, Path, None] = None,
    task: str = "icu",
    icu_days: int = 7,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
) -> DataSplits:
    records, class_names = hannover_records(
        DEFAULT_HANNOVER_DIR if root is None else root, task=task, icu_days=icu_days
    )
    return _from_records(
        records,
        class_names,
        image_size=image_size,
        seed=seed,
        split_fractions=split_fractions,
        cache=True,
        fold=fold,
    )


def _covid_cxr(
    *,
    image_size: int,
    seed: int,
    fold: Fold = None,
    root: Union[str, Path, None] = None,
    task: str = "covid",
    lesion_classes: Sequence[str] = DEFAULT_LESION_CLASSES,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
) -> DataSplits:
    dataset = covid_cxr_dataset(
        DEFAULT_COVID_CXR_DIR if root is None else root,
        image_size=image_size,
        task=task,
        lesion_classes=lesion_classes,
    )
    train, val, test = (
        dataset.subset(part)
        for part in _split(dataset.targets, dataset.patient_ids, split_fractions, seed, fold)
    )
    return DataSplits(train, val, test, dataset.class_names)


def _folder(
    root: Path,
    *,
    image_size: int,
    seed: int,
    fold: Fold = None,
    class_names: Optional[Sequence[str]] = None,
    cache: bool = False,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    skip_bad_files: bool = False,
    mask_colour: Any = None,
    mask_index: Any = None,
    mask_threshold: Optional[float] = None,
) -> DataSplits:
    records, names = read_folder(
        root,
        class_names=class_names,
        skip_bad_files=skip_bad_files,
        mask_colour=mask_colour,
        mask_index=mask_index,
        mask_threshold=mask_threshold,
    )
    return _from_records(
        records,
        names,
        image_size=image_size,
        seed=seed,
        split_fractions=split_fractions,
        cache=cache,
        fold=fold,
    )


def _call(
    builder: Callable[..., DataSplits],
    source: str,
    options: dict[str, Any],
    *,
    image_size: int,
    seed: int,
    fold: Fold,
) -> DataSplits:
    parameters = inspect.signature(builder).parameters.items()
    allowed = [
        name
        for name, p in parameters
        if p.kind is p.KEYWORD_ONLY and name not in ("image_size", "seed", "fold")
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for data source {source!r}; allowed: {allowed}"
        )
    return builder(image_size=image_size, seed=seed, fold=fold, **options)


def build_datasets(
    source: str, *, image_size: int, seed: int, fold: Fold = None, **options: Any
) -> DataSplits:
    """Build the train, validation and test data sets of ``source``.

    Args:
        source: ``"synthetic"`` (the phantom), ``"hannover"`` (the real radiographs in
            ``../shared/data/hannover-covid-cxr``), ``"covid-cxr-segmentations"`` (the
            radiographs with lesion masks in ``../shared/data/covid-cxr-segmentations``)
            or the path of a folder data set.
        image_size: side length S of every image and mask.
        seed: seeds the phantom and the split.
        fold: ``(index, k)``: the splits of fold ``index`` of a patient-grouped,
            stratified k-fold cross-validation (:func:`.splits.patient_kfold`, the
            validation share ``val / (train + val)`` of ``split_fractions``) instead of
            the one split; every image is tested in exactly one of the k folds.
        **options: per source (all optional), and ``split_fractions`` (train, val,
            test; default 0.7/0.15/0.15) for every source.

            * ``"synthetic"``: ``num_images`` (600), ``class_fractions`` (normal,
              bacterial, viral, covid19; 0.60/0.25/0.10/0.05), ``shortcut_markers``
              (False), ``marker_correlation`` (0.9, in train and val; the test
              split's marker is independent of the class), ``val_marker_correlation``
              (None: as ``marker_correlation``; 0.0 builds validation like the test
              split), ``noise`` (0.03).
            * ``"hannover"``: ``root`` (the data folder), ``task`` ("icu" or
              "projection"), ``icu_days`` (7). See :mod:`.hannover`.
            * ``"covid-cxr-segmentations"``: ``root`` (the data folder), ``task``
              ("covid" or "aetiology"), ``lesion_classes`` (ground-glass opacities and
              consolidation). See :mod:`.covid_cxr`.
            * folder: ``class_names`` (sorted label names), ``cache`` (False: decode
              on access), ``skip_bad_files`` (False: stop on any unreadable file),
              ``mask_colour``, ``mask_index``, ``mask_threshold`` (the mask rule).
              See :mod:`.folder` and :mod:`.image_io`.

    Returns:
        The three splits; no patient is in two of them.

    Raises:
        TypeError: on an option the source does not take.
        FileNotFoundError: when the source folder or a file it lists is missing.
        ValueError: on invalid options, unreadable files, or too few patients to split.

    Examples:
        >>> splits = build_datasets("synthetic", image_size=32, seed=0, num_images=40)
        >>> len(splits.train) + len(splits.val) + len(splits.test), splits.class_names[0]
        (40, 'normal')
        >>> sample = splits.train[0]
        >>> sample["image"].shape, sample["mask_valid"].item()
        (torch.Size([1, 32, 32]), True)
    """
    builders: dict[str, Callable[..., DataSplits]] = {
        "synthetic": _synthetic,
        "hannover": _hannover,
        "covid-cxr-segmentations": _covid_cxr,
    }
    builder = builders.get(source)
    if builder is None:
        root = Path(source)
        if not root.is_dir():
            raise FileNotFoundError(
                f"data source {source!r} is neither 'synthetic', 'hannover' nor an existing folder"
            )
        builder = functools.partial(_folder, root)
    if fold is not None and not (
        isinstance(fold, tuple) and len(fold) == 2 and 0 <= fold[0] < fold[1]
    ):
        raise ValueError(f"fold must be (index, k) with 0 <= index < k, got {fold!r}")
    return _call(builder, source, options, image_size=image_size, seed=seed, fold=fold)
