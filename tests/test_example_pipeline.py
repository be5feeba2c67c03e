"""The Deep Pneumonia example end to end: outputs, exact resume, two processes, real data.

Also the command line (generated from the config, checked before any data is read), the
resume rules (a checkpoint of another run is refused, more epochs continue on the new
schedule) and stale temporary files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from examples.deep_pneumonia.checkpoint import RunMismatch, atomic_save, load
from examples.deep_pneumonia.config import Config, preset
from examples.deep_pneumonia.run import build_parser, config_from_args, main, run_pipeline

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
    "plots/confusion_matrix_normalised.png",
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


TINY: dict[str, Any] = {
    "image_size": 32,
    "phantom_images": 60,
    "pretrain_epochs": 1,
    "pretrain_batch_size": 8,
    "epochs": 2,
    "batch_size": 8,
    "augment": False,
    "device": "cpu",
}


def tiny(**changes: Any) -> Config:
    """Every stage and component on, as small as the pipeline allows: the smoke preset, smaller."""
    return preset("smoke", **{**TINY, **changes})


def parse(*argv: str) -> Config:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_command_line_maps_to_config() -> None:
    cfg = parse(
        "--no-pretrain", "--no-regularizer", "--epochs", "3", "--seed", "7",
        "--data-option", "split_fractions=[0.6, 0.2, 0.2]", "--threads", "0",
    )  # fmt: skip
    assert (cfg.pretrain, cfg.class_balanced, cfg.attention, cfg.regularizer) == (
        False, True, True, False,
    )  # fmt: skip
    assert (cfg.epochs, cfg.seed, cfg.threads) == (3, 7, 0)
    assert cfg.data_kwargs()["split_fractions"] == [0.6, 0.2, 0.2]
    assert parse() == Config() == preset("quick")
    smoke = parse("--smoke", "--data", "hannover")
    assert smoke == Config.smoke(data="hannover") and "num_images" not in smoke.data_kwargs()
    with pytest.raises(ValueError, match="epochs"):
        Config(epochs=0)


def test_every_setting_is_a_flag_and_a_set_key_with_its_default_in_help() -> None:
    help_text = " ".join(build_parser().format_help().split())
    quick, smoke = Config(), Config.smoke()
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        assert f"{flag} " in help_text, flag
        assert f"(default: {getattr(quick, f.name)!r})" in help_text, f.name
        if f.name in ("data_options", "resume"):
            continue
        value = getattr(smoke, f.name)
        text = json.dumps(value) if isinstance(value, (bool, type(None))) else str(value)
        by_set = parse("--set", f"{f.name}={text}")
        assert getattr(by_set, f.name) == value, f.name
        if not isinstance(value, bool):
            assert getattr(parse(flag, text), f.name) == value, f.name
    assert parse("--shortcut-markers", "--no-amp", "--no-progress").shortcut_markers
    assert parse("--set", "guidance_weight=2.5", "--set", "stop_after=none").guidance_weight == 2.5


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--set", "guidance_wieght=1"], "guidance_wieght"),
        (["--set", "epochs"], "epochs"),
        (["--epochs", "three"], "epochs"),
        (["--set", "amp=maybe"], "amp"),
        (["--epochs", "0"], "epochs"),
        (["--teacher-forcing", "1.5"], "teacher_forcing"),
        (["--initial-attention", "1"], "initial_attention"),
        (["--arch", "resnet7"], "arch"),
        (["--device", "gpu"], "device"),
        (["--data-options", "[1, 2]"], "data_options"),
        (["--data-option", "num_images=10"], "phantom_images"),
    ],
)
def test_bad_command_line_stops_before_reading_data(
    argv: list[str], named: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_data(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("data read despite a bad command line")

    monkeypatch.setattr("examples.deep_pneumonia.run.build_datasets", no_data)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert named in capsys.readouterr().err


def test_config_checks_types_and_ranges_naming_the_setting() -> None:
    with pytest.raises(TypeError, match="'epochs' must be int"):
        Config(epochs=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'attention' must be bool"):
        Config(attention=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown setting"):
        preset("smoke", guidance_wieght=1.0)
    with pytest.raises(ValueError, match="preset must be one of"):
        preset("fast")
    assert Config(lr=1).lr == 1


def test_model_is_built_from_its_parts() -> None:
    from contrast_attn import MaskGuidedAttention
    from examples.deep_pneumonia.model import Backbone, DeepPneumoniaNet

    backbone = Backbone("resnet10", width=4)
    attention = MaskGuidedAttention(8, mode="hard", residual=False, initial_attention=0.05)
    net = DeepPneumoniaNet(backbone, 3, attention=attention, feature_stage=2)
    assert net.attention is attention and "guided" not in dict(net.named_buffers())
    out = net(torch.rand(2, 1, 32, 32))
    assert out.logits.shape == (2, 3) and out.attention is not None
    with pytest.raises(ValueError, match="in_channels"):
        DeepPneumoniaNet(backbone, 3, attention=MaskGuidedAttention(16), feature_stage=2)


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
    for key in ("macro_f1", "balanced_accuracy"):
        assert 0.0 <= written[key] <= 1.0
    # 60 phantom images leave the rarest class without test images: no recall, said so.
    assert written["classes_without_test_images"] == [written["minority_class"]]
    assert written["minority_recall"] is None
    assert "no test images" in (tmp_path / "report.md").read_text()
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

    assert (
        load(tmp_path / "full/checkpoints/pretrain.pt")["history"]
        == load(interrupted / "checkpoints/pretrain.pt")["history"]
    )


def test_pretraining_warms_up_per_batch_and_logs_its_probe(tmp_path: Path) -> None:
    cfg = tiny(pretrain_epochs=2, pretrain_warmup_epochs=1, epochs=1)
    metrics = run_pipeline(cfg, tmp_path)
    assert metrics is not None
    history = load(tmp_path / "checkpoints/pretrain.pt")["history"]
    # 42 training images in batches of 8: 5 steps per epoch; the warm-up's first step
    # trains at 1/5 of the rate, the second epoch starts the cosine at the full rate.
    assert history[0]["pretrain_lr"] == pytest.approx(cfg.pretrain_lr / 5)
    assert history[1]["pretrain_lr"] == pytest.approx(cfg.pretrain_lr)
    assert "probe_knn_macro_f1_init" in history[0] and "probe_knn_macro_f1_init" not in history[1]
    for record in history:
        assert 0.0 <= record["probe_knn_macro_f1"] <= 1.0
        assert 0.0 <= record["probe_knn_accuracy"] <= 1.0
    written = json.loads((tmp_path / "metrics.json").read_text())["pretrain_probe"]
    assert written["nt_xent"]["chance"] == pytest.approx(math.log(2 * 8 - 1))
    assert written["nt_xent"]["last_epoch"] == history[-1]["pretrain_loss"]
    assert written["knn_macro_f1"] == {
        "random_init": history[0]["probe_knn_macro_f1_init"],
        "first_epoch": history[0]["probe_knn_macro_f1"],
        "last_epoch": history[1]["probe_knn_macro_f1"],
    }
    report = (tmp_path / "report.md").read_text()
    assert "## Pre-training" in report and "below chance" in report
    # Two epochs on 42 images cannot move the features: the report says so and how.
    assert "too short to help" in report and "--pretrain-epochs 40" in report


def test_pretraining_probe_can_be_switched_off(tmp_path: Path) -> None:
    cfg = tiny(pretrain_probe_images=0)
    assert run_pipeline(cfg, tmp_path, stage="pretrain") is None
    history = load(tmp_path / "checkpoints/pretrain.pt")["history"]
    assert not any(key.startswith("probe_") for key in history[0])


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


def test_resume_refuses_another_run_saying_what_differs(tmp_path: Path) -> None:
    cfg = tiny(pretrain_epochs=2, stop_after=1)
    assert run_pipeline(cfg, tmp_path, stage="pretrain") is None
    saved = (tmp_path / "config.json").read_text()
    for changes, named in [
        ({"seed": 1}, "'seed'"),
        ({"phantom_images": 50}, "'phantom_images'"),
        ({"data_options": {"noise": 0.05}}, "'data_options'"),
        ({"arch": "resnet18"}, "'arch'"),
    ]:
        with pytest.raises(RunMismatch, match=named):
            run_pipeline(cfg.replace(resume=True, **changes), tmp_path, stage="pretrain")
        assert (tmp_path / "config.json").read_text() == saved, "config.json overwritten"
    # Fine-tuning settings are not what pre-training depends on: resumed, not refused.
    assert run_pipeline(cfg.replace(resume=True, lr=1e-3), tmp_path, stage="pretrain") is None
    assert load(tmp_path / "checkpoints/pretrain.pt")["epoch"] == 2


def test_resume_with_more_epochs_follows_the_new_cosine_schedule(tmp_path: Path) -> None:
    cfg = tiny(pretrain=False, epochs=2)
    run_pipeline(cfg, tmp_path / "short", stage="finetune")
    run_pipeline(cfg.replace(epochs=4, resume=True), tmp_path / "short", stage="finetune")
    history = load(tmp_path / "short/checkpoints/finetune.pt")["history"]
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0, 4.0]
    lrs = [h["train_lr"] for h in history]
    # The rule: epochs past the old end run on the cosine of the new total, never at 0.
    expected = [cfg.lr * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert lrs[:2] == pytest.approx([cfg.lr, cfg.lr / 2])  # the old 2-epoch schedule
    assert lrs[2:] == pytest.approx(expected[2:], rel=1e-12) and min(lrs) > 0
    with pytest.raises(RunMismatch, match="'epochs'"):
        run_pipeline(cfg.replace(epochs=3, resume=True), tmp_path / "short", stage="finetune")


def _folder_dataset(root: Path, num_images: int = 40) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    rows = ["image,label"]
    generator = np.random.default_rng(0)
    for i in range(num_images):
        pixels = generator.integers(0, 256, (32, 32), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"img{i:03d}.png")
        rows.append(f"img{i:03d}.png,{'normal' if i % 3 else 'pneumonia'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_changed_data_is_refused_by_resume_and_by_evaluation(tmp_path: Path) -> None:
    data = _folder_dataset(tmp_path / "data")
    cfg = tiny(data=str(data), pretrain=False, attention=False, regularizer=False, epochs=2)
    out = tmp_path / "run"
    assert run_pipeline(cfg.replace(stop_after=1), out) is None
    labels = data / "labels.csv"
    original = labels.read_text()
    labels.write_text("\n".join(original.splitlines()[:-1]) + "\n")  # one row removed
    with pytest.raises(RunMismatch, match="split"):
        run_pipeline(cfg.replace(resume=True), out)
    labels.write_text(original)
    assert run_pipeline(cfg.replace(resume=True), out) is not None
    assert run_pipeline(cfg, out, stage="evaluate") is not None
    labels.write_text("\n".join(original.splitlines()[:-1]) + "\n")
    with pytest.raises(RunMismatch, match=r"(test|val|train) split"):
        run_pipeline(cfg, out, stage="evaluate")


def test_stale_temporary_checkpoints_are_removed_on_the_next_start(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale = [folder / ".pretrain.pt.k1ll3d.tmp", folder / ".finetune.pt.x9.tmp"]
    for path in stale:
        path.write_bytes(b"partial")
    (folder / "notes.tmp").write_text("not ours")
    assert run_pipeline(tiny(), tmp_path, stage="pretrain") is None
    assert not any(path.exists() for path in stale)
    assert (folder / "notes.tmp").exists() and (folder / "pretrain.pt").is_file()


def test_a_class_without_test_images_is_left_out_of_the_macro_average(tmp_path: Path) -> None:
    from examples.deep_pneumonia.evaluate import Predictions, classification_metrics
    from examples.deep_pneumonia.report import write_report

    labels = np.array([0, 0, 0, 1, 1, 2])  # no image of class 3
    predicted = np.array([0, 0, 1, 1, 1, 2])
    probs = np.eye(4)[predicted] * 0.7 + 0.075
    nan = np.full(len(labels), np.nan)
    pred = Predictions(labels, probs, nan, nan, nan)
    names = ["normal", "bacterial", "viral", "covid19"]
    metrics = classification_metrics(pred, names, [50, 20, 10, 5])
    f1 = {"normal": 0.8, "bacterial": 0.8, "viral": 1.0}
    assert metrics["macro_f1"] == pytest.approx(sum(f1.values()) / 3)
    assert metrics["classes_without_test_images"] == ["covid19"]
    assert metrics["per_class"]["covid19"]["recall"] is None
    assert metrics["minority_class"] == "covid19" and metrics["minority_recall"] is None
    write_report(tiny(), metrics, tmp_path / "report.md")
    report = (tmp_path / "report.md").read_text()
    assert "no test images" in report and "0.000 | n/a" not in report
    assert "| covid19 | never predicted | no test images |" in report
