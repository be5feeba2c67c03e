"""The example's k-fold cross-validation (``--folds``), localisation in metrics.json, the real set."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torchvision")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from examples.deep_pneumonia.checkpoint import RunMismatch, load
from examples.deep_pneumonia.config import Config, preset
from examples.deep_pneumonia.covid_cxr import DEFAULT_COVID_CXR_DIR
from examples.deep_pneumonia.crossval import aggregate, fold_dir, run_crossval
from examples.deep_pneumonia.data import build_datasets
from examples.deep_pneumonia.run import main, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.xdist_group("crossval")


def _cfg(**changes: Any) -> Config:
    return Config.smoke(folds=2, phantom_images=64, **changes)


@pytest.fixture(scope="module")
def crossval(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("cv")
    summary = run_crossval(_cfg(), out)
    assert summary is not None
    return out, summary


def test_folds_keep_patients_apart_and_test_every_image_once() -> None:
    cfg = _cfg()
    tested: list[str] = []
    for k in range(cfg.folds):
        splits = build_datasets(
            cfg.data, image_size=cfg.image_size, seed=cfg.seed, **cfg.replace(fold=k).data_kwargs()
        )
        train = set(splits.train.patient_ids) | set(splits.val.patient_ids)
        assert train and not train & set(splits.test.patient_ids)
        tested += splits.test.image_ids
    assert len(tested) == len(set(tested)) == cfg.phantom_images


def test_every_fold_runs_into_its_folder_and_the_aggregate_has_mean_and_std(
    crossval: tuple[Path, dict[str, Any]],
) -> None:
    out, summary = crossval
    per_fold = [json.loads((fold_dir(out, k) / "metrics.json").read_text()) for k in range(2)]
    assert [json.loads((fold_dir(out, k) / "config.json").read_text())["fold"] for k in range(2)] == [0, 1]  # fmt: skip
    f1 = [m["macro_f1"] for m in per_fold]
    assert summary["macro_f1"]["mean"] == pytest.approx(sum(f1) / 2)
    assert summary["macro_f1"]["std"] == pytest.approx(abs(f1[0] - f1[1]) / math.sqrt(2))
    recall = [m["per_class"]["normal"]["recall"] for m in per_fold]
    assert summary["per_class"]["normal"]["recall"]["values"] == recall
    total = sum(sum(row) for row in summary["confusion_matrix"])
    assert total == sum(m["num_images"] for m in per_fold) == 64
    assert json.loads((out / "metrics.json").read_text()) == summary
    assert "2-fold cross-validation" in (out / "report.md").read_text()


def test_localisation_is_in_the_metrics_with_nulls_for_masks_the_phantom_lacks(
    crossval: tuple[Path, dict[str, Any]],
) -> None:
    out, summary = crossval
    metrics = json.loads((fold_dir(out, 0) / "metrics.json").read_text())
    loc = metrics["localisation"]
    assert loc["cam_class"] == "predicted" and loc["num_images"] > 0
    for name in ("attention", "cam", "uniform"):
        assert 0.0 <= loc[name]["lesion_mass"] <= 1.0
        assert loc[name]["device_mass"] is None and loc[name]["outside_lung_mass"] is None
    assert loc["num_device_images"] == 0
    # The old summary is the localisation module's numbers.
    assert metrics["lesion_attention"]["attention_mass"] == loc["attention"]["lesion_mass"]
    assert metrics["lesion_attention"]["lesion_area_fraction"] == loc["uniform"]["lesion_mass"]
    assert summary["localisation"]["attention"]["lesion_mass"]["n"] == 2
    assert (fold_dir(out, 0) / "plots" / "cam.png").is_file()


def test_a_stopped_fold_resumes_to_the_uninterrupted_result(
    crossval: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, reference = crossval
    assert run_crossval(_cfg(stop_after=1, fold=1), tmp_path) is None
    assert load(fold_dir(tmp_path, 1) / "checkpoints" / "finetune.pt")["epoch"] == 1
    assert not (fold_dir(tmp_path, 1) / "metrics.json").exists()
    assert run_crossval(_cfg(resume=True, fold=1), tmp_path) is None  # fold 0 still missing
    resumed = json.loads((fold_dir(tmp_path, 1) / "metrics.json").read_text())
    assert resumed["macro_f1"] == reference["macro_f1"]["values"][1]
    lesion_mass = reference["localisation"]["attention"]["lesion_mass"]["values"][1]
    assert resumed["localisation"]["attention"]["lesion_mass"] == lesion_mass
    with pytest.raises(RunMismatch):
        run_pipeline(_cfg(resume=True, fold=0), fold_dir(tmp_path, 1))


def test_fold_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="'fold' must be below 'folds'"):
        Config(folds=3, fold=3)
    with pytest.raises(ValueError, match="'folds' must be 0 or >= 2"):
        Config(folds=1)
    with pytest.raises(ValueError, match="crossval"):
        run_pipeline(_cfg(), Path("unused"))


def test_aggregate_of_numbers_nones_names_and_nesting() -> None:
    folds = [
        {"a": 1.0, "b": None, "name": "x", "nested": {"c": 2}, "confusion_matrix": [[1, 0], [0, 1]]},
        {"a": 3.0, "b": None, "name": "x", "nested": {"c": None}, "confusion_matrix": [[0, 1], [1, 0]]},
        {"a": 5.0, "b": 0.5, "name": "y", "nested": {"c": 4}, "confusion_matrix": [[2, 0], [0, 0]]},
    ]  # fmt: skip
    result = aggregate(folds)
    assert result["a"] == {"mean": 3.0, "std": 2.0, "n": 3, "values": [1.0, 3.0, 5.0]}
    assert result["b"] == {"mean": 0.5, "std": None, "n": 1, "values": [None, None, 0.5]}
    assert result["name"] == {"values": ["x", "x", "y"]}
    assert result["nested"]["c"]["mean"] == 3.0 and result["nested"]["c"]["n"] == 2
    assert result["confusion_matrix"] == [[3, 1], [1, 1]]
    with pytest.raises(ValueError, match="at least one fold"):
        aggregate([])


def test_missing_real_folder_stops_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--data", "covid-cxr-segmentations", "--data-option", f"root={tmp_path / 'none'}"])
    message = str(stopped.value.code)
    assert message.startswith("error: COVID-19 CXR segmentations not found") and "\n" not in message
    result = subprocess.run(
        [sys.executable, "examples/deep_pneumonia/run.py", "--preset", "covid_cxr",
         "--data-option", f"root={tmp_path / 'none'}", "--out", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "not found" in result.stderr


@pytest.mark.skipif(
    not (DEFAULT_COVID_CXR_DIR / "structure.csv").is_file(),
    reason=f"covid-cxr-segmentations not found at {DEFAULT_COVID_CXR_DIR}",
)
def test_smoke_run_on_the_real_set(tmp_path: Path) -> None:
    cfg = preset(
        "covid_cxr",
        fold=0,
        image_size=32,
        width=8,
        pretrain_epochs=1,
        epochs=1,
        ssl_dim=16,
        regularizer_dim=8,
    )
    assert run_crossval(cfg, tmp_path) is None  # one fold of five
    metrics = json.loads((fold_dir(tmp_path, 0) / "metrics.json").read_text())
    loc = metrics["localisation"]
    assert loc["num_images"] > 0 and loc["num_device_images"] > 0 and loc["num_lung_images"] > 0
    assert 0.0 <= loc["attention"]["device_mass"] <= 1.0
    assert 0.0 < loc["uniform"]["device_mass"] < loc["uniform"]["lesion_mass"] < 1.0
    assert (fold_dir(tmp_path, 0) / "plots" / "attention.png").is_file()
