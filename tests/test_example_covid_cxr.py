"""The COVID-19 CXR segmentations source and patient-grouped k-fold cross-validation."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from examples.deep_pneumonia.covid_cxr import (
    DEFAULT_COVID_CXR_DIR,
    DEFAULT_LESION_CLASSES,
    DEVICE_CLASSES,
    LESION_CLASSES,
    LUNG_CLASSES,
    covid_cxr_dataset,
    covid_cxr_folds,
    full_mask,
    read_covid_cxr,
)
from examples.deep_pneumonia.data import build_datasets
from examples.deep_pneumonia.splits import patient_kfold
from examples.deep_pneumonia.transforms import train_transform

needs_data = pytest.mark.skipif(
    not (DEFAULT_COVID_CXR_DIR / "structure.csv").is_file(),
    reason=f"COVID-19 CXR segmentations not found at {DEFAULT_COVID_CXR_DIR}",
)

STRUCTURE = ["Template Name", "Filename", "Mask", "Resolution", "Top", "Left", "Width", "Height"]


def write_set(root: Path) -> None:
    """Two tiny images in the set's layout: crops clipped at the border, an empty Mask row,
    two crops of one class, RGB and grayscale images."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.full((6, 8, 3), 100, np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.full((5, 5), 50, np.uint8)).save(root / "images" / "b.jpg")

    def crop(name: str, pixels: np.ndarray) -> str:
        rgba = np.zeros((*pixels.shape, 4), np.uint8)
        rgba[..., 0], rgba[..., 3] = pixels * 255, 255  # alpha everywhere: only RGB counts
        Image.fromarray(rgba, "RGBA").save(root / "masks" / name)
        return f"masks/{name}"

    rows = [
        # a 3 x 3 block at (left 6, top 4) of an 8 x 6 image: clipped to 2 x 2
        ("Consolidation", "a.png", crop("a1.png", np.ones((3, 3))), "8x6", 4, 6, 3, 3),
        ("Ground Glass Opacities", "a.png", crop("a2.png", np.eye(2)), "8x6", 0, 0, 2, 2),
        ("Ground Glass Opacities", "a.png", crop("a3.png", np.ones((1, 1))), "8x6", 5, 0, 1, 1),
        ("Tubings", "a.png", crop("a4.png", np.ones((6, 1))), "8x6", 0, 3, 1, 6),
        ("Monitoring Probes", "a.png", "", "8x6", 0, 0, 0, 0),
        ("Left Lung", "b.jpg", crop("b1.png", np.ones((5, 2))), "5x5", 0, 0, 2, 5),
        ("Pleural Effusion", "b.jpg", crop("b2.png", np.ones((1, 5))), "5x5", 4, 0, 5, 1),
    ]
    with (root / "structure.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(STRUCTURE)
        writer.writerows(rows)
    with (root / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patientid", "finding", "filename"])
        writer.writerows([["p1", "COVID-19, ARDS", "a.png"], ["p2", "Pneumocystis", "b.jpg"]])


def test_masks_are_pasted_clipped_and_united(tmp_path: Path) -> None:
    write_set(tmp_path)
    a, b = read_covid_cxr(tmp_path)
    assert (a.image_id, a.patient_id, a.size, b.size) == ("a", "p1", (8, 6), (5, 5))
    assert "Monitoring Probes" not in a.classes
    lesion = np.zeros((6, 8), bool)
    lesion[4:6, 6:8] = True  # consolidation, clipped
    lesion[0, 0] = lesion[1, 1] = lesion[5, 0] = True  # the two GGO crops
    np.testing.assert_array_equal(full_mask(a, LESION_CLASSES), lesion)
    device = np.zeros((6, 8), bool)
    device[:, 3] = True
    np.testing.assert_array_equal(full_mask(a, DEVICE_CLASSES), device)
    assert not full_mask(a, LUNG_CLASSES).any()
    np.testing.assert_array_equal(full_mask(b, ("Left Lung",))[:, :2], np.ones((5, 2), bool))


def test_tasks_lesion_classes_and_items(tmp_path: Path) -> None:
    write_set(tmp_path)
    covid = covid_cxr_dataset(tmp_path, image_size=4)
    assert covid.targets == [1, 0] and covid.class_names == ["non_covid", "covid19"]
    aetiology = covid_cxr_dataset(tmp_path, image_size=4, task="aetiology")
    assert aetiology.targets == [0, 3]
    default = covid_cxr_dataset(tmp_path, image_size=5, task="aetiology")
    every = covid_cxr_dataset(
        tmp_path, image_size=5, task="aetiology", lesion_classes=LESION_CLASSES
    )
    assert default[1]["mask"].sum() == 0 and every[1]["mask"][0, 4].tolist() == [1.0] * 5
    sample = default[0]
    assert sample["image"].shape == sample["device_mask"].shape == (1, 5, 5)
    assert bool(sample["mask_valid"]) and 0 < float(sample["image"].max()) <= 1
    assert default[1]["lung_mask"][0, :, :2].sum() == 10
    augmented = default.with_transform(train_transform(5))[0]
    assert "device_mask" not in augmented and "lung_mask" not in augmented
    batch = next(iter(DataLoader(default, batch_size=2)))
    assert batch["lung_mask"].shape == (2, 1, 5, 5)
    with pytest.raises(ValueError, match="lesion_classes"):
        covid_cxr_dataset(tmp_path, image_size=4, lesion_classes=["Lesion"])
    with pytest.raises(ValueError, match="task"):
        covid_cxr_dataset(tmp_path, image_size=4, task="severity")


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*root="):
        build_datasets("covid-cxr-segmentations", image_size=8, seed=0, root=missing)
    with pytest.raises(TypeError, match="unknown option"):
        build_datasets("covid-cxr-segmentations", image_size=8, seed=0, icu_days=3)


def test_unknown_finding_has_no_aetiology(tmp_path: Path) -> None:
    write_set(tmp_path)
    text = (tmp_path / "metadata.csv").read_text().replace("Pneumocystis", "Influenza")
    (tmp_path / "metadata.csv").write_text(text)
    assert covid_cxr_dataset(tmp_path, image_size=4).targets == [1, 0]
    with pytest.raises(ValueError, match="Influenza"):
        covid_cxr_dataset(tmp_path, image_size=4, task="aetiology")


# Cross-validation


@st.composite
def grouped_labels(draw: st.DrawFn) -> tuple[list[int], list[str], int]:
    """Patients with one class each (as in the data: no patient has two findings)."""
    patients = draw(st.integers(6, 40))
    classes = draw(st.integers(1, 4))
    labels, groups = [], []
    for p in range(patients):
        label = draw(st.integers(0, classes - 1))
        for _ in range(draw(st.integers(1, 4))):
            labels.append(label)
            groups.append(f"p{p}")
    k = draw(st.integers(2, min(6, patients // 3)))
    return labels, groups, k


@given(grouped_labels(), st.integers(0, 3))
def test_kfold_groups_coverage_and_balance(
    case: tuple[list[int], list[str], int], seed: int
) -> None:
    labels, groups, k = case
    folds = patient_kfold(labels, groups, k, seed=seed, val_fraction=0.2)
    tested = sorted(i for fold in folds for i in fold.test)
    assert tested == list(range(len(labels)))
    for fold in folds:
        assert sorted(fold.train + fold.val + fold.test) == list(range(len(labels)))
        patients = [{groups[i] for i in part} for part in fold]
        assert not patients[0] & patients[1] and not patients[0] & patients[2]
        assert not patients[1] & patients[2] and fold.val
    size = Counter(groups)
    for c, n in Counter(labels).items():
        largest = max(size[g] for g, label in zip(groups, labels) if label == c)
        for fold in folds:
            in_fold = sum(labels[i] == c for i in fold.test)
            assert abs(in_fold - n / k) <= largest


@given(grouped_labels())
def test_kfold_is_deterministic_and_mixed_groups_do_not_cross(
    case: tuple[list[int], list[str], int],
) -> None:
    labels, groups, k = case
    mixed = [label if i % 3 else (label + 1) % 4 for i, label in enumerate(labels)]
    assert patient_kfold(mixed, groups, k, seed=5) == patient_kfold(mixed, groups, k, seed=5)
    for fold in patient_kfold(mixed, groups, k, seed=5):
        assert not {groups[i] for i in fold.test} & {groups[i] for i in fold.train + fold.val}


def test_kfold_bad_arguments() -> None:
    with pytest.raises(ValueError, match="k must be"):
        patient_kfold([0, 1, 0], ["a", "b", "c"], 4)
    with pytest.raises(ValueError, match="val_fraction"):
        patient_kfold([0, 1, 0], ["a", "b", "c"], 2, val_fraction=1.0)
    with pytest.raises(ValueError, match="one entry per image"):
        patient_kfold([0, 1], ["a"], 2)
    folds = patient_kfold([0, 1, 0, 1], ["a", "b", "c", "d"], 2, val_fraction=0.0)
    assert all(not fold.val for fold in folds)


# The real set


@needs_data
def test_real_counts() -> None:
    dataset = covid_cxr_dataset(image_size=32)
    assert len(dataset) == 100 and len(set(dataset.patient_ids)) == 73
    assert dataset.class_counts() == [35, 65]
    aetiology = covid_cxr_dataset(image_size=32, task="aetiology")
    assert aetiology.class_counts() == [65, 10, 9, 11] and len(set(aetiology.patient_ids)) == 68
    records = read_covid_cxr()
    assert sum(bool(full_mask(r, DEFAULT_LESION_CLASSES).any()) for r in records) == 95
    assert sum(bool(full_mask(r, DEVICE_CLASSES).any()) for r in records) == 29
    regions = [dataset.regions(i) for i in range(len(dataset))]
    # one lesion (1e-5 of its image) is below half an output pixel and vanishes (documented)
    assert sum(bool(r["lesion"].any()) for r in regions) == 94
    assert all(bool(r["lung"].any()) for r in regions)
    for r in regions:
        for mask in r.values():
            assert set(mask.unique().tolist()) <= {0.0, 1.0}


@needs_data
def test_real_splits_and_folds() -> None:
    splits = build_datasets("covid-cxr-segmentations", image_size=32, seed=0)
    parts = [set(s.patient_ids) for s in (splits.train, splits.val, splits.test)]
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
    assert sum(len(s) for s in (splits.train, splits.val, splits.test)) == 100
    dataset = covid_cxr_dataset(image_size=32)
    folds = covid_cxr_folds(dataset, 5, seed=0)
    assert sorted(i for _, _, test in folds for i in test.image_ids) == sorted(dataset.image_ids)
    for train, val, test in folds:
        assert not set(test.patient_ids) & set(train.patient_ids + val.patient_ids)
        assert 6 <= test.class_counts()[0] <= 8
