"""Deep Pneumonia, end to end: data, pre-training, fine-tuning, evaluation.

With no flags it runs the quick default on the built-in phantom and writes everything
to ``runs/deep_pneumonia``::

    python examples/deep_pneumonia/run.py
    python examples/deep_pneumonia/run.py --data hannover   # the real radiographs
    python examples/deep_pneumonia/run.py --preset covid_cxr   # real lesion masks, 5 folds
    python examples/deep_pneumonia/run.py --smoke --folds 3   # cross-validation
    python examples/deep_pneumonia/run.py --data my_folder --stage finetune --resume
    python examples/deep_pneumonia/run.py --no-pretrain --no-attention   # ablation
    torchrun --nproc_per_node 2 examples/deep_pneumonia/run.py --out runs/ddp

Outputs: ``config.json``, ``checkpoints/`` (written atomically after every epoch;
``--resume`` continues exactly), ``metrics.json``, ``plots/curves.png``,
``plots/confusion_matrix.png``, ``plots/confusion_matrix_normalised.png``,
``plots/attention.png`` (the attention map, or the CAM without attention;
``plots/cam.png`` too with attention) and ``report.md``. With ``--folds K`` each fold
writes these into ``fold_<k>/`` and ``metrics.json`` and ``report.md`` of the run
folder hold the mean ± std over folds (:mod:`.crossval`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository root importable for the package imports below.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.deep_pneumonia import finetune as finetune_stage
from examples.deep_pneumonia import pretrain as pretrain_stage
from examples.deep_pneumonia.checkpoint import RunMismatch, remove_stale_temporaries
from examples.deep_pneumonia.config import (
    ALIASES,
    PRESETS,
    SECTIONS,
    Config,
    parse_assignment,
    parse_value,
    preset,
)
from examples.deep_pneumonia.crossval import run_crossval
from examples.deep_pneumonia.data import DataSplits, build_datasets
from examples.deep_pneumonia.evaluate import evaluate
from examples.deep_pneumonia.finetune import finetune, load_finetuned
from examples.deep_pneumonia.model import Backbone, DeepPneumoniaNet
from examples.deep_pneumonia.plots import (
    attention_overlays,
    confusion_matrix_plot,
    normalised_confusion_plot,
    training_curves,
)
from examples.deep_pneumonia.pretrain import load_pretrained, pretrain, pretrain_summary
from examples.deep_pneumonia.report import write_report
from examples.deep_pneumonia.training import (
    Runtime,
    StageStopped,
    seed_everything,
    setup_runtime,
    teardown,
)

__all__ = ["build_parser", "config_from_args", "main", "run_pipeline"]

STAGES = ("all", "pretrain", "finetune", "evaluate")
# The preset a data source starts from when --preset is not given (else "quick").
SOURCE_PRESETS = {"covid-cxr-segmentations": "covid_cxr"}
History = list[dict[str, float]]


def run_pipeline(cfg: Config, out: Path, stage: str = "all") -> dict[str, Any] | None:
    """Run ``stage`` (or all stages) of the pipeline into ``out``.

    A single stage starts from what the earlier stages saved in ``out``.

    Returns:
        The test metrics when the evaluation ran on this process, else ``None``
        (other ranks, an earlier stage only, or a stage stopped by ``cfg.stop_after``).

    Raises:
        RunMismatch: when a checkpoint in ``out`` that this run would resume or use
            belongs to another run (settings, data or split), saying what differs.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if cfg.folds and cfg.fold is None:
        raise ValueError(
            "setting 'folds' runs every fold: use crossval.run_crossval, or set 'fold'"
        )
    rt = setup_runtime(cfg)
    try:
        splits = _prepare(cfg, out, rt, stage)
        backbone, pretrain_history = _pretrained(cfg, splits, rt, out, stage)
        if stage == "pretrain":
            return None
        if stage == "evaluate":
            net, history = load_finetuned(cfg, splits, out)
        else:
            net, history = finetune(backbone, cfg, splits, rt, out)
        metrics = None
        if stage in ("all", "evaluate") and rt.is_main:
            metrics = evaluate(
                net.to(rt.device),
                splits.test,
                splits.train.class_counts(),
                rt,
                cfg.batch_size,
                tune=splits.val,
            )
            metrics["pretrain_probe"] = pretrain_summary(cfg, pretrain_history)
            curves = {"pretrain": pretrain_history, "finetune": history}
            _write_outputs(cfg, metrics, net, splits, curves, rt, out)
        rt.barrier()
        return metrics
    except StageStopped:
        return None
    finally:
        teardown(rt)


def _prepare(cfg: Config, out: Path, rt: Runtime, stage: str) -> DataSplits:
    """The data; the run folder checked against the checkpoints it will use, then set up."""
    seed_everything(cfg.seed, "data")
    splits = build_datasets(cfg.data, image_size=cfg.image_size, seed=cfg.seed, **cfg.data_kwargs())
    _check_checkpoints(cfg, splits, out, stage)
    if rt.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for path in remove_stale_temporaries(out / "checkpoints"):
            print(f"removed {path}, left by an interrupted checkpoint write")
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    rt.barrier()
    return splits


def _check_checkpoints(cfg: Config, splits: DataSplits, out: Path, stage: str) -> None:
    """Refuse, before anything is written, a checkpoint this run resumes or uses but does not match."""
    position = STAGES.index(stage)
    for index, module in enumerate((pretrain_stage, finetune_stage), start=1):
        if module is pretrain_stage and not (cfg.pretrain and cfg.pretrain_epochs > 0):
            continue
        used = position > index  # an earlier stage's result
        resumed = cfg.resume and position in (0, index)
        saver = module.checkpointer(cfg, splits, out)
        if (used or resumed) and saver.path.is_file():
            saver.read(growing=resumed)


def _pretrained(
    cfg: Config, splits: DataSplits, rt: Runtime, out: Path, stage: str
) -> tuple[Backbone | None, History]:
    """The backbone fine-tuning starts from (``None``: from scratch) and pre-training's history."""
    if not (cfg.pretrain and cfg.pretrain_epochs > 0):
        return None, []
    if stage in ("all", "pretrain"):
        return pretrain(cfg, splits, rt, out)
    return load_pretrained(cfg, splits, out)


def _write_outputs(
    cfg: Config,
    metrics: dict[str, Any],
    net: DeepPneumoniaNet,
    splits: DataSplits,
    history: dict[str, History],
    rt: Runtime,
    out: Path,
) -> None:
    """``metrics.json``, the figures and the report of the run in ``out``."""
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    training_curves(history, plots / "curves.png")
    confusion_matrix_plot(
        metrics["confusion_matrix"], splits.class_names, plots / "confusion_matrix.png"
    )
    normalised_confusion_plot(
        metrics["confusion_matrix_normalised"],
        splits.class_names,
        plots / "confusion_matrix_normalised.png",
    )
    attention_overlays(net, splits.test, rt, plots / "attention.png")
    if net.attention is not None:
        attention_overlays(net, splits.test, rt, plots / "cam.png", kind="cam")
    write_report(cfg, metrics, out / "report.md")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``run.py``: the run's options, then one flag per setting."""
    parser = argparse.ArgumentParser(
        description="Deep Pneumonia: attention-based contrastive learning for class-imbalanced "
        "pneumonia lesion recognition (pre-train, fine-tune, evaluate).",
        epilog="Boolean settings have --NAME and --no-NAME; a setting is also --set NAME=VALUE.",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/deep_pneumonia"), help="run folder")
    parser.add_argument("--stage", choices=STAGES, default="all", help="run one stage, or all")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="the settings to start from (default: covid_cxr for --data "
        "covid-cxr-segmentations, else quick)",
    )
    parser.add_argument(
        "--smoke", dest="preset", action="store_const", const="smoke", help="--preset smoke (CI)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any setting (repeatable)"
    )
    parser.add_argument(
        "--data-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one option of the data source, VALUE as JSON (e.g. task=projection)",
    )
    groups = {name: parser.add_argument_group(f"{name} settings") for name in SECTIONS}
    for f in dataclasses.fields(Config):
        default = getattr(Config(), f.name)
        text = f"{f.metadata['help']} (default: {default!r})"
        flag = "--" + f.name.replace("_", "-")
        group = groups[f.metadata["section"]]
        if isinstance(default, bool):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)  # fmt: skip
        else:
            group.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar="VALUE", help=text)  # fmt: skip
    _add_alias_flags(parser, groups)
    return parser


def _add_alias_flags(
    parser: argparse.ArgumentParser, groups: dict[str, argparse._ArgumentGroup]
) -> None:
    """``--NAME``/``--no-NAME`` for each alias of :data:`ALIASES` (a setting's two values)."""
    sections = {f.name: f.metadata["section"] for f in dataclasses.fields(Config)}
    for alias, (name, on, off) in ALIASES.items():
        text = f"--{name.replace('_', '-')} {on} (--no-...: {off})"
        flag = "--" + alias.replace("_", "-")
        groups[sections[name]].add_argument(flag, dest=alias, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)  # fmt: skip


def config_from_args(args: argparse.Namespace) -> Config:
    """The :class:`Config` of parsed arguments: the preset, then ``--set``, then the flags.

    Raises:
        ValueError, TypeError: naming the setting, on an unknown, unparsable or invalid one.
    """
    changes: dict[str, Any] = dict(parse_assignment(item) for item in args.set)
    for name in [f.name for f in dataclasses.fields(Config)] + list(ALIASES):
        if hasattr(args, name):
            value = getattr(args, name)
            changes[name] = parse_value(name, value) if isinstance(value, str) else value
    name = args.preset or SOURCE_PRESETS.get(changes.get("data"), "quick")
    if args.data_option:
        options = dict(changes.get("data_options", PRESETS[name].get("data_options", {})))
        for item in args.data_option:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--data-option expects KEY=VALUE, got {item!r}")
            try:
                options[key] = json.loads(value)
            except json.JSONDecodeError:
                options[key] = value
        changes["data_options"] = options
    return preset(name, **changes)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run the pipeline."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    try:
        if cfg.folds:
            metrics = run_crossval(cfg, args.out, args.stage)
        else:
            metrics = run_pipeline(cfg, args.out, args.stage)
    except (RunMismatch, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    if metrics is not None:
        print(_summary_line(metrics) + f"; report: {args.out / 'report.md'}")


def _summary_line(metrics: dict[str, Any]) -> str:
    """The headline numbers of a run, or their mean ± std over the folds of a cross-validation."""

    def show(value: Any) -> str:
        if isinstance(value, dict):
            return f"{value['mean']:.3f} ± {value['std'] or 0.0:.3f}"
        return f"{value:.3f}"

    over = f" (mean ± std over {metrics['folds']} folds)" if "folds" in metrics else ""
    baseline = metrics["majority_baseline"]["macro_f1"]
    return (
        f"test macro-F1 {show(metrics['macro_f1'])} (majority-class baseline {show(baseline)}),"
        f" balanced accuracy {show(metrics['balanced_accuracy'])}{over}"
    )


if __name__ == "__main__":
    main()
