"""The Deep Pneumonia example's file reading: radiographs (PNG, JPEG, DICOM), masks of every
common kind, the two folder layouts, and the checks that run before training."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from examples.deep_pneumonia.data import build_datasets
from examples.deep_pneumonia.folder import (
    BadFilesError,
    ImageFolderDataset,
    check_records,
    load_image,
    load_mask,
    read_folder,
)
from examples.deep_pneumonia.image_io import (
    ImageReadError,
    MaskRule,
    is_dicom,
    read_mask,
    read_radiograph,
)

# ---------------------------------------------------------------- helpers

HEIGHT, WIDTH = 24, 32


def lesion_of(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """The reference lesion: a rectangle in the upper left."""
    lesion = np.zeros((height, width), dtype=bool)
    lesion[2 : height // 2, 3 : width // 2] = True
    return lesion


def gradient(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """An 8-bit image with many gray levels (a radiograph stand-in)."""
    rows, cols = np.mgrid[0:height, 0:width]
    return ((rows * 7 + cols * 3) % 256).astype(np.uint8)


def save_mask(path: Path, kind: str, lesion: np.ndarray) -> None:
    """Write ``lesion`` the way annotation tools export it."""
    h, w = lesion.shape
    if kind == "binary":
        Image.fromarray(lesion).save(path)
    elif kind == "gray01":
        Image.fromarray(lesion.astype(np.uint8)).save(path)
    elif kind == "gray255":
        Image.fromarray(lesion.astype(np.uint8) * 255).save(path)
    elif kind == "label_map":  # class 2 of a label map
        Image.fromarray(lesion.astype(np.uint8) * 2).save(path)
    elif kind == "gray16":
        Image.fromarray(lesion.astype(np.uint16) * 1000).save(path)
    elif kind == "rgb_red":
        rgb = np.zeros((h, w, 3), dtype=np.uint8)
        rgb[lesion] = (255, 0, 0)
        Image.fromarray(rgb).save(path)
    elif kind == "rgb_dark_blue":
        rgb = np.zeros((h, w, 3), dtype=np.uint8)
        rgb[lesion] = (0, 0, 60)
        Image.fromarray(rgb).save(path)
    elif kind == "rgba_overlay":  # coloured where lesion, transparent elsewhere
        rgba = np.zeros((h, w, 4), dtype=np.uint8)
        rgba[..., :3] = (200, 30, 30)
        rgba[lesion, 3] = 255
        Image.fromarray(rgba).save(path)
    elif kind == "la":
        la = np.zeros((h, w, 2), dtype=np.uint8)
        la[..., 0] = 255
        la[lesion, 1] = 255
        Image.fromarray(la, mode="LA").save(path)
    elif kind == "palette_voc":  # VOC: index 0 black background, index 1 (128, 0, 0)
        palette = Image.fromarray(lesion.astype(np.uint8), mode="P")
        palette.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 254)
        palette.save(path)
    else:
        raise AssertionError(kind)


MASK_KINDS = [
    "binary",
    "gray01",
    "gray255",
    "label_map",
    "gray16",
    "rgb_red",
    "rgb_dark_blue",
    "rgba_overlay",
    "la",
    "palette_voc",
]


def write_dataset(
    root: Path,
    n: int = 6,
    *,
    mask_kind: str | None = None,
    mask_size: tuple[int, int] = (HEIGHT, WIDTH),
    labels_encoding: str = "utf-8",
) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["image,label"]
    for i in range(n):
        Image.fromarray(gradient()).save(root / "images" / f"im{i}.png")
        rows.append(f"im{i}.png,{'a' if i % 2 else 'b'}")
        if mask_kind is not None:
            save_mask(root / "masks" / f"im{i}.png", mask_kind, lesion_of(*mask_size))
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding=labels_encoding)


def truncate(path: Path, keep: int = 400) -> None:
    path.write_bytes(path.read_bytes()[:keep])


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_every_mask_kind_reads_its_lesion(tmp_path: Path, kind: str) -> None:
    """RGB and palette masks were read as annotated and empty; now every kind is its lesion."""
    write_dataset(tmp_path, mask_kind=kind)
    records, names = read_folder(tmp_path)
    dataset = ImageFolderDataset(records, names, image_size=WIDTH)
    expected = torch.from_numpy(
        np.array(Image.fromarray(lesion_of()).resize((WIDTH, WIDTH), Image.Resampling.NEAREST))
    ).float()
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample["mask_valid"]
        assert sample["mask"].sum() > 0, kind
        assert (sample["mask"][0] != expected).float().mean() < 0.05, kind
    np.testing.assert_array_equal(read_mask(tmp_path / "masks" / "im0.png"), lesion_of())


@pytest.mark.parametrize("size", [(12, 16), (96, 128), (50, 50)])
def test_mask_of_any_size(tmp_path: Path, size: tuple[int, int]) -> None:
    write_dataset(tmp_path, n=4, mask_kind="rgb_red", mask_size=size)
    records, names = read_folder(tmp_path)
    mask = ImageFolderDataset(records, names, image_size=16)[0]["mask"][0]
    assert mask[:, :7].sum() > 0 and mask[9:, :].sum() == 0 and mask[:, 9:].sum() == 0


def test_mask_rule_colour_index_threshold(tmp_path: Path) -> None:
    rgb = np.zeros((2, 4, 3), dtype=np.uint8)
    rgb[0, 1], rgb[0, 2], rgb[1, 3] = (255, 0, 0), (0, 255, 0), (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "colours.png")
    expected = np.array([[0, 1, 0, 0], [0, 0, 0, 1]], dtype=bool)
    for colour in ("red", "#ff0000", (255, 0, 0), [255, 0, 0]):
        got = read_mask(tmp_path / "colours.png", MaskRule(colour=colour))
        np.testing.assert_array_equal(got, expected)
    labels = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=np.uint8)
    palette = Image.fromarray(labels, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0, 0, 0] * 252)
    palette.save(tmp_path / "palette.png")
    Image.fromarray(labels).save(tmp_path / "labels.png")
    for name in ("palette.png", "labels.png"):
        np.testing.assert_array_equal(read_mask(tmp_path / name, MaskRule(index=2)), labels == 2)
        np.testing.assert_array_equal(
            read_mask(tmp_path / name, MaskRule(index=[1, 3])), (labels == 1) | (labels == 3)
        )
        np.testing.assert_array_equal(read_mask(tmp_path / name), labels > 0)
    soft = np.array([[0, 90, 130, 250]], dtype=np.uint8)
    Image.fromarray(soft).save(tmp_path / "soft.png")
    np.testing.assert_array_equal(
        read_mask(tmp_path / "soft.png", MaskRule(threshold=128)), soft >= 128
    )


def test_mask_rule_rejects_bad_rules(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one of mask colour, index and threshold"):
        MaskRule(colour="red", index=1)
    with pytest.raises(ValueError, match="not a colour name"):
        MaskRule(colour="reddish")
    with pytest.raises(ValueError, match="3 integers"):
        MaskRule(colour=(255, 0))
    with pytest.raises(ValueError, match="non-negative integer"):
        MaskRule(index=-1)
    with pytest.raises(ValueError, match="positive number"):
        MaskRule(threshold=0)
    save_mask(tmp_path / "red.png", "rgb_red", lesion_of())
    with pytest.raises(ImageReadError, match=r"red\.png.*palette or single-channel"):
        read_mask(tmp_path / "red.png", MaskRule(index=1))
    save_mask(tmp_path / "gray.png", "gray255", lesion_of())
    with pytest.raises(ImageReadError, match=r"gray\.png.*needs a colour mask"):
        read_mask(tmp_path / "gray.png", MaskRule(colour="white"))
    Image.open(tmp_path / "red.png").save(tmp_path / "red.jpg", quality=95)
    with pytest.raises(ImageReadError, match=r"red\.jpg.*lossless"):
        read_mask(tmp_path / "red.jpg", MaskRule(colour="red"))


def test_jpeg_mask_ignores_compression_artefacts(tmp_path: Path) -> None:
    Image.fromarray(lesion_of(96, 128).astype(np.uint8) * 255).save(tmp_path / "m.jpg", quality=50)
    got = read_mask(tmp_path / "m.jpg")
    assert (got != lesion_of(96, 128)).mean() < 0.01


def test_an_image_saved_as_a_mask_is_refused(tmp_path: Path) -> None:
    write_dataset(tmp_path, n=4, mask_kind="gray255")
    Image.fromarray(gradient()).save(tmp_path / "masks" / "im2.png")
    with pytest.raises(BadFilesError, match=r"im2\.png.*does not look like a mask") as info:
        read_folder(tmp_path)
    assert len(info.value.bad) == 1
    # As a soft mask with a threshold, it is a mask.
    records, _ = read_folder(tmp_path, mask_threshold=128)
    assert len(records) == 4


def test_negative_mask_values_are_refused(tmp_path: Path) -> None:
    Image.fromarray(np.array([[-1.0, 0.0], [1.0, 0.0]], dtype=np.float32)).save(tmp_path / "m.tiff")
    with pytest.raises(ImageReadError, match=r"m\.tiff.*>= 0"):
        read_mask(tmp_path / "m.tiff")


# ---------------------------------------------------------------- radiographs


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A radiograph stored sideways with an EXIF orientation was read sideways."""
    stored = np.zeros((40, 60), dtype=np.uint8)
    stored[:, :30] = 255  # left half bright as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "x.jpg", exif=exif, quality=100)
    shown = read_radiograph(tmp_path / "x.jpg")
    np.testing.assert_allclose(shown, np.rot90(stored, k=-1) / 255.0, atol=0.05)
    image = load_image(tmp_path / "x.jpg", 8)[0]
    assert image[:3].mean() > 0.9 and image[-3:].mean() < 0.1  # the top half is bright


def test_exif_orientation_in_a_data_set_with_boxes(tmp_path: Path) -> None:
    """Boxes are in pixels of the image as displayed."""
    (tmp_path / "images").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((40, 60), dtype=np.uint8)).save(
        tmp_path / "images" / "x.jpg", exif=exif
    )
    Image.fromarray(np.zeros((40, 60), dtype=np.uint8)).save(tmp_path / "images" / "y.png")
    (tmp_path / "labels.csv").write_text("image,label\nx.jpg,a\ny.png,b\n")
    (tmp_path / "boxes.csv").write_text("image,x,y,w,h\nx,0,0,40,30\n")  # top half of 40 x 60
    records, names = read_folder(tmp_path)
    mask = ImageFolderDataset(records, names, image_size=8)[0]["mask"][0]
    assert mask[:4].all() and not mask[4:].any()


def test_16_bit_and_8_bit_images(tmp_path: Path) -> None:
    wide = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 300 + 1000).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "w.png")
    got = read_radiograph(tmp_path / "w.png")
    assert got.dtype == np.float32 and got.shape == (3, 4)
    np.testing.assert_allclose(got, (wide - 1000.0) / (11 * 300), atol=1e-6)
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 255, 255)
    rgb[1, 1] = (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    np.testing.assert_allclose(read_radiograph(tmp_path / "c.png"), [[1, 0], [0, 76 / 255]])


def test_truncated_jpeg_is_found_before_training(tmp_path: Path) -> None:
    """A truncated JPEG used to pass construction and fail when the test split was read."""
    (tmp_path / "images").mkdir()
    rows = ["image,label,patient_id"]
    for i in range(12):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (64, 64), np.uint8)).save(
            tmp_path / "images" / f"im{i}.jpg", quality=95
        )
        rows.append(f"im{i},{'a' if i % 3 else 'b'},p{i}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    truncate(tmp_path / "images" / "im5.jpg")
    truncate(tmp_path / "images" / "im9.jpg")
    with pytest.raises(BadFilesError) as info:
        build_datasets(str(tmp_path), image_size=16, seed=0)
    message = str(info.value)
    assert "2 of 12 images" in message and "im5.jpg" in message and "im9.jpg" in message
    assert "skip_bad_files" in message
    with pytest.warns(UserWarning, match=r"(?s)2 of 12 images are left out.*im5\.jpg.*im9\.jpg"):
        records, _ = read_folder(tmp_path, skip_bad_files=True)
    assert sorted(r.image_id for r in records) == sorted(
        f"im{i}" for i in range(12) if i not in (5, 9)
    )


def test_all_bad_files_are_listed_at_once(tmp_path: Path) -> None:
    write_dataset(tmp_path, n=6, mask_kind="gray255")
    (tmp_path / "images" / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    (tmp_path / "masks" / "im3.png").write_bytes(b"garbage")
    save_mask(tmp_path / "masks" / "im4.png", "gray255", lesion_of(WIDTH, HEIGHT))  # transposed
    (tmp_path / "boxes.csv").write_text("image,x,y,w,h\nim5,10,10,30,5\n")  # 40 > 32 wide
    with pytest.raises(BadFilesError) as info:
        read_folder(tmp_path)
    reasons = {record.image_id: reason for record, reason in info.value.bad}
    assert sorted(reasons) == ["im1", "im3", "im4", "im5"]
    assert "masks/im3.png" in reasons["im3"]
    assert "unrotated" in reasons["im4"]
    assert "exceeds the 32 x 24 image" in reasons["im5"]
    with pytest.warns(UserWarning, match="4 of 6 images are left out"):
        records, _ = read_folder(tmp_path, skip_bad_files=True)
    assert [r.image_id for r in records] == ["im0", "im2"]


def test_nothing_left_after_skipping_raises(tmp_path: Path) -> None:
    write_dataset(tmp_path, n=2)
    for i in range(2):
        (tmp_path / "images" / f"im{i}.png").write_bytes(b"broken")
    with pytest.raises(BadFilesError, match="2 of 2 images"):
        read_folder(tmp_path, skip_bad_files=True)


def test_dataset_lists_all_unreadable_files(tmp_path: Path) -> None:
    write_dataset(tmp_path, n=4)
    records, names = read_folder(tmp_path)
    for i in (1, 2):
        (tmp_path / "images" / f"im{i}.png").write_bytes(b"broken")
    for cache in (False, True):
        with pytest.raises(BadFilesError, match=r"(?s)2 of 4 images.*im1\.png.*im2\.png"):
            ImageFolderDataset(records, names, image_size=8, cache=cache)
    assert len(check_records(records)) == 2


def test_decompression_bomb_names_the_file_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_dataset(tmp_path, n=2)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 24 x 32 > 2 x 100: an error
    with pytest.raises(ImageReadError, match=r"im0\.png.*MAX_IMAGE_PIXELS"):
        read_radiograph(tmp_path / "images" / "im0.png")
    with pytest.raises(BadFilesError, match=r"(?s)im0\.png.*MAX_IMAGE_PIXELS.*im1\.png"):
        read_folder(tmp_path)


# ---------------------------------------------------------------- labels.csv and layouts


def test_labels_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a BOM; the column ``image`` was not found."""
    write_dataset(tmp_path, n=4, labels_encoding="utf-8-sig")
    assert (tmp_path / "labels.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    records, names = read_folder(tmp_path)
    assert len(records) == 4 and names == ["a", "b"]


def write_class_folders(root: Path) -> None:
    for label, count in (("normal", 3), ("covid", 2)):
        (root / label).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(gradient()).save(root / label / f"{label}{i}.png")
    (root / "covid" / "sub").mkdir()
    Image.fromarray(gradient()).save(root / "covid" / "sub" / "covid9.jpg")
    (root / "masks").mkdir()
    save_mask(root / "masks" / "covid0.png", "rgb_red", lesion_of())
    (root / "normal" / ".DS_Store").write_bytes(b"x")
    (root / "normal" / "notes.txt").write_text("x")


def test_class_folder_layout(tmp_path: Path) -> None:
    write_class_folders(tmp_path)
    with pytest.warns(UserWarning, match=r"notes\.txt"):
        records, names = read_folder(tmp_path)
    assert names == ["covid", "normal"]
    by_id = {r.image_id: r for r in records}
    assert sorted(by_id) == ["covid0", "covid1", "covid9", "normal0", "normal1", "normal2"]
    assert [by_id[k].label for k in ("covid0", "covid9", "normal2")] == [0, 0, 1]
    assert by_id["covid0"].mask_path == tmp_path / "masks" / "covid0.png"
    assert by_id["normal0"].mask_path is None and by_id["normal0"].patient_id == "normal0"
    with pytest.warns(UserWarning):
        splits = build_datasets(
            str(tmp_path), image_size=8, seed=0, split_fractions=(0.5, 0.25, 0.25)
        )
    assert splits.class_names == ["covid", "normal"]
    with pytest.warns(UserWarning):
        _, ordered = read_folder(tmp_path, class_names=["normal", "covid"])
    assert ordered == ["normal", "covid"]


def test_class_folder_layout_errors(tmp_path: Path) -> None:
    write_class_folders(tmp_path)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="'covid' is not one of"):
        read_folder(tmp_path, class_names=["normal"])
    Image.fromarray(gradient()).save(tmp_path / "normal" / "covid1.jpg")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="'covid1' is listed twice"):
        read_folder(tmp_path)
    (tmp_path / "viral").mkdir()
    with pytest.raises(ValueError, match="viral holds no image"):
        read_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="one folder of images per class"):
        read_folder(tmp_path / "viral")


# ---------------------------------------------------------------- DICOM


def write_dicom(path: Path, pixels: np.ndarray, **attributes: Any) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = pydicom.dataset.FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path)


PIXELS = np.array([[0, 1000, 1500], [2000, 3000, 4095]], dtype=np.uint16)


def test_dicom_window_and_monochrome1(tmp_path: Path) -> None:
    write_dicom(tmp_path / "w.dcm", PIXELS, WindowCenter=2000, WindowWidth=1001)
    # DICOM PS3.3 C.11.2.1.2 LINEAR: (x - (c - 0.5)) / (w - 1) + 0.5, clipped to [0, 1].
    expected = np.clip((PIXELS - 1999.5) / 1000 + 0.5, 0, 1)
    np.testing.assert_allclose(read_radiograph(tmp_path / "w.dcm"), expected, atol=1e-6)
    write_dicom(
        tmp_path / "m1.dcm",
        PIXELS,
        WindowCenter=2000,
        WindowWidth=1001,
        PhotometricInterpretation="MONOCHROME1",
    )
    np.testing.assert_allclose(read_radiograph(tmp_path / "m1.dcm"), 1 - expected, atol=1e-6)
    # Rescale (modality LUT) before the window; no window: min-max.
    write_dicom(
        tmp_path / "r.dcm",
        PIXELS,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=1000,
        WindowWidth=2001,
    )
    expected = np.clip((2.0 * PIXELS - 1000 - 999.5) / 2000 + 0.5, 0, 1)
    np.testing.assert_allclose(read_radiograph(tmp_path / "r.dcm"), expected, atol=1e-6)
    write_dicom(tmp_path / "plain", PIXELS)  # no suffix: found by the DICM preamble
    assert is_dicom(tmp_path / "plain")
    np.testing.assert_allclose(read_radiograph(tmp_path / "plain"), PIXELS / 4095.0, atol=1e-6)


def test_dicom_in_a_folder_data_set(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for i in range(4):
        write_dicom(tmp_path / "images" / f"d{i}.dcm", PIXELS * (i + 1) // 4)
    (tmp_path / "labels.csv").write_text("image,label\nd0,a\nd1,b\nd2,a\nd3,b\n")
    records, names = read_folder(tmp_path)
    image = ImageFolderDataset(records, names, image_size=4)[1]["image"]
    assert image.shape == (1, 4, 4) and 0 <= image.min() and image.max() <= 1


def test_dicom_without_pydicom_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .dcm file used to give "cannot identify image file"."""
    write_dataset(tmp_path, n=2)
    (tmp_path / "images" / "scan.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom raises ImportError
    extra = r"DICOM needs the extra: pip install contrast-attn\[dicom\]"
    with pytest.raises(ImageReadError, match=rf"scan\.dcm.*{extra}"):
        load_image(tmp_path / "images" / "scan.dcm", 8)
    with open(tmp_path / "labels.csv", "a") as handle:
        handle.write("scan,a\n")
    with pytest.raises(BadFilesError, match=rf"scan\.dcm.*{extra}"):
        read_folder(tmp_path)


def test_load_mask_keeps_its_signature(tmp_path: Path) -> None:
    save_mask(tmp_path / "m.png", "palette_voc", lesion_of())
    mask: Callable[..., torch.Tensor] = load_mask
    assert mask(tmp_path / "m.png", 8).sum() > 0
    assert mask(tmp_path / "m.png", 8, MaskRule(index=2)).sum() == 0


def test_skip_bad_files_from_the_command_line(tmp_path: Path) -> None:
    from examples.deep_pneumonia.run import build_parser, config_from_args

    write_dataset(tmp_path, n=12, mask_kind="gray255")
    (tmp_path / "images" / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    cfg = config_from_args(build_parser().parse_args(["--data", str(tmp_path)]))
    with pytest.raises(BadFilesError, match="--skip-bad-files"):
        build_datasets(cfg.data, image_size=32, seed=0, **cfg.data_kwargs())
    args = build_parser().parse_args(["--data", str(tmp_path), "--skip-bad-files"])
    cfg = config_from_args(args)
    with pytest.warns(UserWarning, match="1 of 12 images are left out"):
        splits = build_datasets(cfg.data, image_size=32, seed=0, **cfg.data_kwargs())
    assert len(splits.train) + len(splits.val) + len(splits.test) == 11
