"""The Deep Pneumonia example's data: phantom, folder data set, Hannover adapter, splits,
augmentation."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from examples.deep_pneumonia.data import DataSplits, build_datasets
from examples.deep_pneumonia.dataset import XrayDataset
from examples.deep_pneumonia.folder import ImageFolderDataset, boxes_to_mask, read_folder
from examples.deep_pneumonia.hannover import hannover_records
from examples.deep_pneumonia.phantom import (
    CLASS_NAMES,
    PhantomDataset,
    class_counts,
    phantom_labels,
    render_radiograph,
)
from examples.deep_pneumonia.splits import grouped_stratified_split
from examples.deep_pneumonia.transforms import (
    JointAugment,
    SimCLRAugment,
    simclr_transform,
    train_transform,
)


def check_sample_contract(dataset: XrayDataset, size: int) -> None:
    """Every item follows the contract the pipeline relies on."""
    assert len(dataset.targets) == len(dataset)
    for index in range(len(dataset)):
        sample = dataset[index]
        image, mask = sample["image"], sample["mask"]
        assert image.shape == mask.shape == (1, size, size)
        assert image.dtype == mask.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert sample["mask_valid"].dtype == torch.bool and sample["mask_valid"].shape == ()
        assert sample["label"].dtype == torch.long and sample["label"].shape == ()
        assert int(sample["label"]) == dataset.targets[index]
        assert isinstance(sample["patient_id"], str) and isinstance(sample["image_id"], str)
        if not sample["mask_valid"]:
            assert mask.sum() == 0


def patients(dataset: XrayDataset) -> set[str]:
    return {dataset[i]["patient_id"] for i in range(len(dataset))}


def check_patients_disjoint(splits: DataSplits) -> None:
    train, val, test = patients(splits.train), patients(splits.val), patients(splits.test)
    assert not train & val and not train & test and not val & test


# ---------------------------------------------------------------- phantom


@pytest.fixture(scope="module")
def phantom() -> DataSplits:
    return build_datasets("synthetic", image_size=48, seed=3, num_images=240, shortcut_markers=True)


def test_phantom_contract(phantom: DataSplits) -> None:
    assert phantom.class_names == list(CLASS_NAMES)
    for dataset in (phantom.train, phantom.val, phantom.test):
        check_sample_contract(dataset, 48)
        assert all(bool(dataset[i]["mask_valid"]) for i in range(len(dataset)))
    check_patients_disjoint(phantom)


def test_phantom_is_deterministic_and_order_free() -> None:
    a = render_radiograph(2, seed=5, index=7, image_size=64)
    b = render_radiograph(2, seed=5, index=7, image_size=64)
    other = render_radiograph(2, seed=6, index=7, image_size=64)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.lesion, b.lesion)
    assert np.abs(a.image - other.image).mean() > 0.01
    forward = PhantomDataset([4, 9, 2], [1, 3, 0], seed=5, image_size=40)
    backward = PhantomDataset([2, 9, 4], [0, 3, 1], seed=5, image_size=40)
    for i, j in ((0, 2), (1, 1), (2, 0)):
        torch.testing.assert_close(forward[i]["image"], backward[j]["image"], rtol=0, atol=0)
        torch.testing.assert_close(forward[i]["mask"], backward[j]["mask"], rtol=0, atol=0)
        assert forward[i]["image_id"] == backward[j]["image_id"]


def test_build_synthetic_is_deterministic_by_seed() -> None:
    first = build_datasets("synthetic", image_size=32, seed=1, num_images=40)
    again = build_datasets("synthetic", image_size=32, seed=1, num_images=40)
    other = build_datasets("synthetic", image_size=32, seed=2, num_images=40)
    assert first.train.image_ids == again.train.image_ids
    torch.testing.assert_close(first.test[0]["image"], again.test[0]["image"], rtol=0, atol=0)
    assert first.train.image_ids != other.train.image_ids


@pytest.mark.parametrize("label", range(4))
def test_phantom_masks_match_labels(label: int) -> None:
    for index in range(6):
        image = render_radiograph(label, seed=0, index=index, image_size=64)
        assert image.lungs.sum() > 0.15 * 64 * 64
        if label == 0:
            assert not image.lesion.any()
        else:
            assert image.lesion.sum() >= 20, CLASS_NAMES[label]
            assert not (image.lesion & ~image.lungs).any()
            # The same index without its lesion: the lesion is an opacity, confined to its mask.
            normal = render_radiograph(0, seed=0, index=index, image_size=64)
            opacity = image.image - normal.image
            assert opacity[image.lesion].mean() > 0.04
            assert opacity[image.lesion].mean() > 3 * np.abs(opacity[~image.lesion]).mean()


def test_phantom_lesion_distribution() -> None:
    """Bacterial: one lung; viral and COVID-19: both; COVID-19 peripheral, viral central."""
    size, half = 64, 32
    one_sided: list[bool] = []
    spread: dict[int, list[float]] = {2: [], 3: []}
    for index in range(8):
        lesion = render_radiograph(1, seed=0, index=index, image_size=size).lesion
        one_sided.append(min(lesion[:, :half].sum(), lesion[:, half:].sum()) == 0)
        for label in (2, 3):
            lesion = render_radiograph(label, seed=0, index=index, image_size=size).lesion
            assert lesion[:, :half].any() and lesion[:, half:].any(), CLASS_NAMES[label]
            cols = np.nonzero(lesion)[1]
            spread[label].append(np.abs(cols + 0.5 - half).mean())
    assert sum(one_sided) >= 7
    assert np.mean(spread[3]) > np.mean(spread[2]) + 3


def test_phantom_class_fractions() -> None:
    assert class_counts(600, (0.6, 0.25, 0.1, 0.05)) == [360, 150, 60, 30]
    assert sum(class_counts(101, (0.6, 0.25, 0.1, 0.05))) == 101
    counts = Counter(phantom_labels(1000, (0.5, 0.3, 0.15, 0.05), seed=4))
    assert [counts[c] for c in range(4)] == [500, 300, 150, 50]
    splits = build_datasets("synthetic", image_size=32, seed=0, num_images=200)
    for dataset, share in ((splits.train, 0.7), (splits.val, 0.15), (splits.test, 0.15)):
        expected = [n * share for n in class_counts(200, (0.6, 0.25, 0.1, 0.05))]
        assert np.allclose(dataset.class_counts(), expected, atol=1.0)


def test_shortcut_marker_correlates_in_train_not_in_test(phantom: DataSplits) -> None:
    def agreement(dataset: XrayDataset) -> float:
        corners = dataset.marker_corners  # type: ignore[attr-defined]
        return float(np.mean([c == t for c, t in zip(corners, dataset.targets)]))

    assert agreement(phantom.train) > 0.85
    assert agreement(phantom.val) > 0.8
    assert 0.1 < agreement(phantom.test) < 0.45
    # The marker is drawn where it is said to be: a bright corner, the others dark.
    for dataset in (phantom.train, phantom.test):
        for i in range(10):
            image = dataset[i]["image"][0]
            corner = dataset.marker_corners[i]  # type: ignore[attr-defined]
            patches = [image[:9, :9], image[:9, -9:], image[-9:, :9], image[-9:, -9:]]
            brightest = max(range(4), key=lambda k: float(patches[k].max()))
            assert brightest == corner and patches[corner].max() > 0.9


def test_no_marker_without_shortcut() -> None:
    splits = build_datasets("synthetic", image_size=32, seed=0, num_images=30)
    assert set(splits.train.marker_corners) == {-1}  # type: ignore[attr-defined]


# ---------------------------------------------------------------- folder


def write_folder(root: Path, *, corrupt: bool = False) -> None:
    """A tiny folder data set: PNG and JPEG, RGB and grayscale, a mask, boxes."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["image,label,patient_id"]
    for i in range(12):
        label = "pneumonia" if i % 3 == 0 else "normal"
        stem = f"img{i:02d}"
        array = rng.integers(0, 256, size=(30 + i, 40), dtype=np.uint8)
        if i % 2:
            Image.fromarray(np.stack([array] * 3, axis=-1), mode="RGB").save(
                root / "images" / f"{stem}.jpg", quality=95
            )
            rows.append(f"{stem}.jpg,{label},patient{i // 2}")
        else:
            pixels = array.astype(np.uint16) * 257 if i == 10 else array  # one 16-bit PNG
            Image.fromarray(pixels).save(root / "images" / f"{stem}.png")
            rows.append(f"{stem},{label},patient{i // 2}")
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[:, :20] = 255
    Image.fromarray(mask).save(root / "masks" / "img00.png")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "boxes.csv").write_text(
        "image,x,y,w,h\nimg03.jpg,0,0,20,33\nimg03.jpg,20,0,20,10\nimg05,,,,\n"
    )
    if corrupt:
        (root / "images" / "img04.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")


def test_folder_loader(tmp_path: Path) -> None:
    write_folder(tmp_path)
    records, names = read_folder(tmp_path)
    assert names == ["normal", "pneumonia"]
    dataset = ImageFolderDataset(records, names, image_size=16)
    check_sample_contract(dataset, 16)
    by_id = {dataset[i]["image_id"]: dataset[i] for i in range(len(dataset))}
    # A 0/255 mask, resized: its left half.
    assert by_id["img00"]["mask_valid"]
    assert by_id["img00"]["mask"][0, :, :8].all() and not by_id["img00"]["mask"][0, :, 8:].any()
    # Two boxes (x, y, w, h) in original pixels of a 40 x 33 image: left half + top strip.
    expected = torch.zeros(16, 16)
    expected[:, :8] = 1
    expected[:5, 8:] = 1
    assert by_id["img03"]["mask_valid"]
    torch.testing.assert_close(by_id["img03"]["mask"][0], expected)
    # An empty boxes row: annotated, lesion-free. No annotation at all: mask_valid False.
    assert by_id["img05"]["mask_valid"] and by_id["img05"]["mask"].sum() == 0
    assert not by_id["img02"]["mask_valid"] and not by_id["img01"]["mask_valid"]
    # Grayscale PNG and RGB JPEG alike are read as one channel.
    original = np.asarray(Image.open(tmp_path / "images" / "img02.png"), dtype=np.float32)
    assert abs(float(by_id["img02"]["image"].mean()) - original.mean() / 255) < 0.02
    assert by_id["img01"]["patient_id"] == by_id["img00"]["patient_id"] == "patient0"
    # 16-bit: min-max scaled to [0, 1].
    wide = np.asarray(Image.open(tmp_path / "images" / "img10.png"), dtype=np.float32)
    scaled = (wide.mean() - wide.min()) / (wide.max() - wide.min())
    assert abs(float(by_id["img10"]["image"].mean()) - scaled) < 0.02


def test_folder_cache_matches_lazy(tmp_path: Path) -> None:
    write_folder(tmp_path)
    records, names = read_folder(tmp_path, class_names=["pneumonia", "normal"])
    assert records[0].label == 0
    lazy = ImageFolderDataset(records, names, image_size=20)
    cached = ImageFolderDataset(records, names, image_size=20, cache=True)
    for i in (0, 3, 7):
        torch.testing.assert_close(lazy[i]["image"], cached[i]["image"], rtol=0, atol=0)
        torch.testing.assert_close(lazy[i]["mask"], cached[i]["mask"], rtol=0, atol=0)


def test_folder_split_groups_patients(tmp_path: Path) -> None:
    write_folder(tmp_path)
    splits = build_datasets(str(tmp_path), image_size=16, seed=0)
    assert sum(len(d) for d in (splits.train, splits.val, splits.test)) == 12
    check_patients_disjoint(splits)


def test_folder_corrupt_image_names_the_file(tmp_path: Path) -> None:
    write_folder(tmp_path, corrupt=True)
    with pytest.raises(ValueError, match=r"img04\.png"):
        read_folder(tmp_path)
    # Records checked earlier, a file damaged since: the data set names it too.
    (tmp_path / "images" / "img04.png").unlink()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "images" / "img04.png")
    records, names = read_folder(tmp_path)
    (tmp_path / "images" / "img04.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(ValueError, match=r"img04\.png"):
        ImageFolderDataset(records, names, image_size=16)
    with pytest.raises(ValueError, match=r"img04\.png"):
        ImageFolderDataset(records, names, image_size=16, cache=True)


def test_folder_truncated_image_is_found_before_training(tmp_path: Path) -> None:
    write_folder(tmp_path)
    records, names = read_folder(tmp_path)
    path = tmp_path / "images" / "img01.jpg"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"img01\.jpg"):
        read_folder(tmp_path)
    # A file truncated after the check: at construction (verify) or on load, named.
    with pytest.raises(ValueError, match=r"img01\.jpg"):
        dataset = ImageFolderDataset(records, names, image_size=16)
        dataset[[r.image_id for r in records].index("img01")]


def test_folder_missing_files_and_bad_labels(tmp_path: Path) -> None:
    write_folder(tmp_path)
    (tmp_path / "images" / "img07.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="img07"):
        read_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"labels\.csv"):
        read_folder(tmp_path / "nowhere")
    (tmp_path / "images" / "img07.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="'pneumonia' is not one of"):
        read_folder(tmp_path, class_names=["normal"])


def test_boxes_to_mask_scales_to_the_resized_image() -> None:
    mask = boxes_to_mask([(10, 20, 30, 40)], (100, 200), 10)[0]
    rows, cols = torch.nonzero(mask, as_tuple=True)
    assert [rows.min(), rows.max(), cols.min(), cols.max()] == [1, 2, 1, 3]
    assert boxes_to_mask([], (50, 50), 8).sum() == 0


# ---------------------------------------------------------------- splits


@given(
    labels_and_groups=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 15)), min_size=1, max_size=60
    ),
    seed=st.integers(0, 2**16),
)
def test_split_never_shares_a_patient(labels_and_groups: list[tuple[int, int]], seed: int) -> None:
    labels = [label for label, _ in labels_and_groups]
    groups = [f"p{group}" for _, group in labels_and_groups]
    parts = grouped_stratified_split(labels, groups, (0.6, 0.2, 0.2), seed=seed)
    assert sorted(i for part in parts for i in part) == list(range(len(labels)))
    owners = [{groups[i] for i in part} for part in parts]
    assert not owners[0] & owners[1] and not owners[0] & owners[2] and not owners[1] & owners[2]
    assert parts == grouped_stratified_split(labels, groups, (0.6, 0.2, 0.2), seed=seed)


def test_split_is_stratified() -> None:
    labels = phantom_labels(400, seed=0)
    groups = [str(i // 2) for i in range(400)]
    parts = grouped_stratified_split(labels, groups, (0.7, 0.15, 0.15), seed=1)
    totals = Counter(labels)
    for part, share in zip(parts, (0.7, 0.15, 0.15)):
        counts = Counter(labels[i] for i in part)
        for c in range(4):
            assert abs(counts[c] - share * totals[c]) <= 2
    assert parts != grouped_stratified_split(labels, groups, (0.7, 0.15, 0.15), seed=2)


def test_split_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        grouped_stratified_split([0, 1], ["a", "b"], (0.5, 0.2))
    with pytest.raises(ValueError, match="one entry per image"):
        grouped_stratified_split([0, 1], ["a"])
    with pytest.raises(ValueError, match="too few"):
        build_datasets("synthetic", image_size=32, seed=0, num_images=2)


# ---------------------------------------------------------------- transforms


def blob_sample(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(1, 32, 32)
    top, left = torch.randint(4, 14, (2,), generator=generator).tolist()
    mask[:, top : top + 14, left : left + 9] = 1.0
    mask[:, top : top + 4, left : left + 16] = 1.0
    return {"image": mask.clone(), "mask": mask}


@pytest.mark.parametrize("hflip", [False, True])
def test_joint_augment_keeps_image_and_mask_aligned(hflip: bool) -> None:
    geometric_only = JointAugment(
        32,
        brightness=0.0,
        contrast=0.0,
        gamma=(1.0, 1.0),
        noise_sigma=0.0,
        blur_p=0.0,
        hflip=hflip,
        interpolation=v2.InterpolationMode.NEAREST,
    )
    moved = 0
    for seed in range(12):
        torch.manual_seed(seed)
        sample = blob_sample(seed)
        out = geometric_only(sample)  # type: ignore[arg-type]
        torch.testing.assert_close(out["image"], out["mask"], rtol=0, atol=0)
        moved += int(not torch.equal(out["mask"], sample["mask"]))
    assert moved >= 10


def test_train_transform_default_overlap() -> None:
    augment = train_transform(32)
    for seed in range(8):
        torch.manual_seed(seed)
        out = augment(blob_sample(seed))  # type: ignore[arg-type]
        assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}
        assert out["image"].min() >= 0 and out["image"].max() <= 1
        image = out["image"]
        bright, mask = image > (image.max() + image.min()) / 2, out["mask"] > 0.5
        assert (bright & mask).sum() / (bright | mask).sum() > 0.7
        centre = [torch.nonzero(x[0]).float().mean(0) for x in (bright, mask)]
        assert torch.dist(*centre) < 0.75


def test_joint_augment_rejects_a_size_mismatch() -> None:
    with pytest.raises(ValueError, match="built for 64 x 64"):
        JointAugment(64)(blob_sample(0))  # type: ignore[arg-type]


def test_simclr_views_differ_and_stay_radiographs() -> None:
    image = render_radiograph(1, seed=0, index=0, image_size=48).image
    sample = {"image": torch.from_numpy(image)[None]}
    torch.manual_seed(0)
    views = simclr_transform(48)(sample)["views"]  # type: ignore[arg-type]
    assert views.shape == (2, 1, 48, 48) and views.dtype == torch.float32
    assert views.min() >= 0 and views.max() <= 1
    assert (views[0] - views[1]).abs().mean() > 0.01
    # Conservative: a view still correlates with the image.
    correlation = np.corrcoef(views[0].flatten().numpy(), image.flatten())[0, 1]
    assert correlation > 0.3


def test_simclr_has_no_flip_unless_asked() -> None:
    def flips(augment: SimCLRAugment) -> bool:
        return any(isinstance(t, v2.RandomHorizontalFlip) for t in augment.geometric.transforms)

    assert not flips(SimCLRAugment(32)) and flips(SimCLRAugment(32, hflip=True))


def test_with_transform_shares_data_and_leaves_original(phantom: DataSplits) -> None:
    augmented = phantom.train.with_transform(simclr_transform(48))
    assert "views" in augmented[0] and "views" not in phantom.train[0]
    assert augmented.targets is phantom.train.targets


def test_datasets_batch_and_pickle(phantom: DataSplits) -> None:
    """Default collation works, and datasets with transforms pickle (DataLoader workers)."""
    dataset = phantom.train.with_transform(simclr_transform(48))
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["views"].shape == (4, 2, 1, 48, 48) and batch["mask_valid"].shape == (4,)
    assert len(batch["patient_id"]) == 4
    restored = pickle.loads(pickle.dumps(phantom.train.with_transform(train_transform(48))))
    assert restored[0]["image"].shape == (1, 48, 48)


# ---------------------------------------------------------------- build_datasets


def test_build_datasets_rejects_unknown_options_and_sources(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="num_imgs"):
        build_datasets("synthetic", image_size=32, seed=0, num_imgs=10)
    with pytest.raises(FileNotFoundError, match="neither"):
        build_datasets(str(tmp_path / "absent"), image_size=32, seed=0)


# ---------------------------------------------------------------- Hannover (real data)


def test_hannover_real_radiographs(hannover_dir: Path) -> None:
    splits = build_datasets("hannover", image_size=32, seed=0, root=hannover_dir)
    datasets = (splits.train, splits.val, splits.test)
    assert sum(len(d) for d in datasets) == 243
    assert splits.class_names == ["no_icu", "icu_within_7d"]
    assert sum(sum(d.targets) for d in datasets) == 32
    assert all(sum(d.targets) > 0 for d in datasets)
    check_patients_disjoint(splits)
    assert len(patients(splits.train) | patients(splits.val) | patients(splits.test)) == 71
    check_sample_contract(splits.test, 32)
    assert not any(bool(splits.train[i]["mask_valid"]) for i in range(len(splits.train)))
    records, names = hannover_records(hannover_dir, task="projection")
    assert names == ["ap", "pa"] and Counter(r.label for r in records) == {0: 194, 1: 49}
