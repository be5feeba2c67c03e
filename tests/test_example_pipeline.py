"""The Deep Pneumonia example end to end: outputs, exact resume, two processes, real data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from examples.deep_pneumonia.checkpoint import atomic_save, load
from examples.deep_pneumonia.config import Config
from examples.deep_pneumonia.run import build_parser, config_from_args, run_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]

OUTPUTS = [
    "config.json",
    "metrics.json",
    "report.md",
    "checkpoints/pretrain.pt",
    "checkpoints/finetune.pt",
    "checkpoints/best.pt",
    "plots/curves.png",
    "plots/confusion_matrix.png",
    "plots/attention.png",
]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny convolutions gain nothing from a second thread; on a shared two-core machine
    # (pytest -n 2) a second thread per process only oversubscribes the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**changes: Any) -> Config:
    """Every stage and component on, as small as the pipeline allows."""
    settings: dict[str, Any] = {
        "image_size": 32,
        "phantom_images": 60,
        "pretrain_epochs": 1,
        "pretrain_batch_size": 8,
        "epochs": 2,
        "batch_size": 8,
        "augment": False,
        "device": "cpu",
    }
    settings.update(changes)
    return Config.smoke(**settings)


def test_command_line_maps_to_config() -> None:
    args = build_parser().parse_args(
        ["--no-pretrain", "--no-regularizer", "--epochs", "3", "--seed", "7",
         "--data-option", "split_fractions=[0.6, 0.2, 0.2]", "--threads", "0"]
    )  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.pretrain, cfg.class_balanced, cfg.attention, cfg.regularizer) == (
        False, True, True, False,
    )  # fmt: skip
    assert (cfg.epochs, cfg.seed, cfg.threads) == (3, 7, None)
    assert cfg.data_kwargs()["split_fractions"] == [0.6, 0.2, 0.2]
    assert config_from_args(build_parser().parse_args([])) == Config()
    smoke = config_from_args(build_parser().parse_args(["--smoke", "--data", "hannover"]))
    assert "num_images" not in smoke.data_kwargs()
    with pytest.raises(ValueError, match="epochs"):
        Config(epochs=0)


def test_atomic_save_keeps_the_old_checkpoint_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.pt"
    atomic_save({"epoch": 1}, path)

    def interrupted(obj: Any, handle: Any) -> None:
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert load(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_tiny_full_run_writes_every_output(tmp_path: Path) -> None:
    metrics = run_pipeline(tiny(), tmp_path)
    assert metrics is not None
    for name in OUTPUTS:
        assert (tmp_path / name).is_file(), name
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == metrics
    names = written["class_names"]
    assert set(written["per_class"]) == set(names)
    assert len(written["confusion_matrix"]) == len(names)
    assert sum(map(sum, written["confusion_matrix"])) == written["num_images"]
    for key in ("macro_f1", "balanced_accuracy", "minority_recall"):
        assert 0.0 <= written[key] <= 1.0
    assert written["majority_baseline"]["class"] == "normal"
    lesion = written["lesion_attention"]
    assert lesion["num_images"] > 0 and 0.0 <= lesion["attention_mass"] <= 1.0
    history = load(tmp_path / "checkpoints/finetune.pt")["history"]
    assert [h["epoch"] for h in history] == [1.0, 2.0]
    assert {"train_cls", "train_guide", "train_reg", "val_macro_f1"} <= set(history[0])
    assert "| macro-F1 |" in (tmp_path / "report.md").read_text()


def test_resume_continues_exactly(tmp_path: Path) -> None:
    cfg = tiny(pretrain_epochs=2, augment=True, teacher_forcing=0.5)
    full = run_pipeline(cfg, tmp_path / "full")
    # Interrupted after the first epoch of pre-training, then resumed twice: once into
    # fine-tuning (stopped after one epoch), once to the end.
    interrupted = tmp_path / "interrupted"
    assert run_pipeline(cfg.replace(stop_after=1), interrupted) is None
    assert load(interrupted / "checkpoints/pretrain.pt")["epoch"] == 1
    assert not (interrupted / "checkpoints/finetune.pt").exists()
    assert run_pipeline(cfg.replace(stop_after=1, resume=True), interrupted) is None
    assert load(interrupted / "checkpoints/finetune.pt")["epoch"] == 1
    resumed = run_pipeline(cfg.replace(resume=True), interrupted)
    assert resumed == full
    a = load(tmp_path / "full/checkpoints/finetune.pt")
    b = load(interrupted / "checkpoints/finetune.pt")
    assert a["history"] == b["history"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


@pytest.mark.distributed
@pytest.mark.xdist_group("distributed")
def test_two_process_gloo_run(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO_ROOT / "examples/deep_pneumonia/run.py"), "--smoke", "--device", "cpu",
        "--out", str(tmp_path), "--image-size", "32", "--epochs", "1", "--pretrain-epochs", "1",
        "--phantom-images", "60", "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in OUTPUTS:
        assert (tmp_path / name).is_file(), name
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["phantom_images"] == 60 and config["image_size"] == 32
    history = load(tmp_path / "checkpoints/pretrain.pt")["history"]
    assert len(history) == 1 and history[0]["pretrain_loss"] > 0


def test_real_radiographs_run(tmp_path: Path, hannover_dir: Path) -> None:
    cfg = tiny(data="hannover", data_options={"root": str(hannover_dir)}, epochs=1)
    metrics = run_pipeline(cfg, tmp_path)
    assert metrics is not None
    assert metrics["num_images"] > 0 and len(metrics["class_names"]) == 2
    # No lesion masks in this data set: guidance and regulariser see no annotation.
    assert metrics["lesion_attention"]["num_images"] == 0
    for name in OUTPUTS:
        assert (tmp_path / name).is_file(), name
