"""Deep Pneumonia, end to end: data, pre-training, fine-tuning, evaluation.

With no flags it runs the quick default on the built-in phantom and writes everything
to ``runs/deep_pneumonia``::

    python examples/deep_pneumonia/run.py
    python examples/deep_pneumonia/run.py --data hannover   # the real radiographs
    python examples/deep_pneumonia/run.py --data my_folder --stage finetune --resume
    python examples/deep_pneumonia/run.py --no-pretrain --no-attention   # ablation
    torchrun --nproc_per_node 2 examples/deep_pneumonia/run.py --out runs/ddp

Outputs: ``config.json``, ``checkpoints/`` (written atomically after every epoch;
``--resume`` continues exactly), ``metrics.json``, ``plots/curves.png``,
``plots/confusion_matrix.png``, ``plots/attention.png`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository root importable for the package imports below.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.deep_pneumonia import checkpoint
from examples.deep_pneumonia.config import Config
from examples.deep_pneumonia.data import DataSplits, build_datasets
from examples.deep_pneumonia.evaluate import write_metrics
from examples.deep_pneumonia.finetune import CHECKPOINT as FINETUNE_CHECKPOINT
from examples.deep_pneumonia.finetune import finetune, load_best
from examples.deep_pneumonia.plots import (
    attention_overlays,
    confusion_matrix_plot,
    training_curves,
)
from examples.deep_pneumonia.pretrain import CHECKPOINT as PRETRAIN_CHECKPOINT
from examples.deep_pneumonia.pretrain import pretrain
from examples.deep_pneumonia.report import write_report
from examples.deep_pneumonia.runtime import (
    Runtime,
    seed_everything,
    setup_runtime,
    teardown,
)

__all__ = ["build_parser", "config_from_args", "main", "run_pipeline"]

STAGES = ("all", "pretrain", "finetune", "evaluate")


def _stage_history(out: Path) -> dict[str, list[dict[str, float]]]:
    """The per-epoch records saved in the stage checkpoints of ``out``."""
    history = {}
    for stage, name in (("pretrain", PRETRAIN_CHECKPOINT), ("finetune", FINETUNE_CHECKPOINT)):
        if (out / name).is_file():
            history[stage] = checkpoint.load(out / name)["history"]
    return history


def evaluate_run(cfg: Config, splits: DataSplits, rt: Runtime, out: Path) -> dict[str, Any]:
    """Stage 3 on rank 0: metrics, figures and the report of the run in ``out``."""
    net = load_best(cfg, len(splits.class_names), out).to(rt.device)
    metrics = write_metrics(cfg, net, splits.test, splits.train.class_counts(), rt, out)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    training_curves(_stage_history(out), plots / "curves.png")
    confusion_matrix_plot(
        metrics["confusion_matrix"], splits.class_names, plots / "confusion_matrix.png"
    )
    attention_overlays(net, splits.test, rt, plots / "attention.png")
    write_report(cfg, metrics, out / "report.md")
    return metrics


def run_pipeline(cfg: Config, out: Path, stage: str = "all") -> dict[str, Any] | None:
    """Run ``stage`` (or all stages) of the pipeline into ``out``.

    Returns:
        The test metrics when the evaluation ran on this process, else ``None``
        (other ranks, an earlier stage only, or a stage stopped by ``cfg.stop_after``).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    rt = setup_runtime(cfg)
    try:
        seed_everything(cfg.seed, "data")
        splits = build_datasets(
            cfg.data, image_size=cfg.image_size, seed=cfg.seed, **cfg.data_kwargs()
        )
        if rt.is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        if stage in ("all", "pretrain") and cfg.pretrain and cfg.pretrain_epochs > 0:
            if not pretrain(cfg, splits, rt, out)[1]:
                return None
        if stage in ("all", "finetune") and not finetune(cfg, splits, rt, out)[1]:
            return None
        metrics = None
        if stage in ("all", "evaluate") and rt.is_main:
            metrics = evaluate_run(cfg, splits, rt, out)
        rt.barrier()
        return metrics
    finally:
        teardown(rt)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``run.py``."""
    parser = argparse.ArgumentParser(
        description="Deep Pneumonia: attention-based contrastive learning for class-imbalanced "
        "pneumonia lesion recognition (pre-train, fine-tune, evaluate)."
    )
    parser.add_argument("--out", type=Path, default=Path("runs/deep_pneumonia"), help="run folder")
    parser.add_argument(
        "--data", default="synthetic", help="'synthetic' (the phantom), 'hannover' or a folder path"
    )
    parser.add_argument("--stage", choices=STAGES, default="all")
    parser.add_argument("--smoke", action="store_true", help="a tiny run of every stage (CI)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoints")
    for name in ("pretrain", "class-balanced", "attention", "regularizer"):
        parser.add_argument(f"--no-{name}", action="store_true", help=f"switch {name} off")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs")
    parser.add_argument("--pretrain-epochs", type=int, help="pre-training epochs")
    parser.add_argument("--batch-size", type=int, help="fine-tuning batch size (global)")
    parser.add_argument("--image-size", type=int, help="side length of the images")
    parser.add_argument("--arch", help="resnet10, resnet18, resnet34 or resnet50")
    parser.add_argument("--checkpoint", help="state_dict of a 1-channel ResNet to start from")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--phantom-images", type=int, help="phantom: number of images")
    parser.add_argument(
        "--shortcut-markers",
        action="store_true",
        help="phantom: a class-correlated marker in training, uncorrelated in the test split",
    )
    parser.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    parser.add_argument("--num-workers", type=int, help="data-loading processes")
    parser.add_argument(
        "--threads", type=int, help="CPU threads per process (default 1; 0 = PyTorch's default)"
    )
    parser.add_argument("--stop-after", type=int, help="stop a stage after N epochs (resumable)")
    parser.add_argument(
        "--data-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option of the data source, VALUE as JSON (e.g. shortcut_markers=true)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The :class:`Config` of parsed arguments (quick default or smoke preset, then flags)."""
    changes: dict[str, Any] = {
        "data": args.data,
        "resume": args.resume,
        "pretrain": not args.no_pretrain,
        "class_balanced": not args.no_class_balanced,
        "attention": not args.no_attention,
        "regularizer": not args.no_regularizer,
    }
    flags = {
        "epochs": args.epochs,
        "pretrain_epochs": args.pretrain_epochs,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "arch": args.arch,
        "checkpoint": args.checkpoint,
        "seed": args.seed,
        "device": args.device,
        "num_workers": args.num_workers,
        "stop_after": args.stop_after,
        "phantom_images": args.phantom_images,
    }
    changes.update({k: v for k, v in flags.items() if v is not None})
    if args.threads is not None:
        changes["threads"] = args.threads or None
    if args.shortcut_markers:
        changes["shortcut_markers"] = True
    if args.no_amp:
        changes["amp"] = False
    if args.no_progress:
        changes["progress"] = False
    base = Config.smoke() if args.smoke else Config()
    options = dict(base.data_options)
    for item in args.data_option:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--data-option expects KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    changes["data_options"] = options
    return base.replace(**changes)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run the pipeline."""
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    metrics = run_pipeline(cfg, args.out, args.stage)
    if metrics is not None:
        baseline = metrics["majority_baseline"]["macro_f1"]
        print(
            f"test macro-F1 {metrics['macro_f1']:.3f} (majority-class baseline {baseline:.3f}), "
            f"balanced accuracy {metrics['balanced_accuracy']:.3f}; report: {args.out / 'report.md'}"
        )


if __name__ == "__main__":
    main()
