"""Every setting of the pipeline in one dataclass, and the named presets.

The defaults are the *quick* run: the whole pipeline (pre-training, fine-tuning,
evaluation) on the built-in phantom in a few minutes on two CPU cores. Four switches
turn the paper's components on and off (the ablation):

- ``pretrain``: self-supervised SimCLR pre-training with NT-Xent on the training images;
- ``imbalance``: the classification loss against the class imbalance: ``"cb"``, the
  class-balanced loss of Cui et al. (the paper's), or ``"ce"``, plain cross-entropy, or
  one of the long-tail family (``"logit_adjusted"``, ``"balanced_softmax"``,
  ``"ldam_drw"``; see :mod:`.imbalance`). ``class_balanced`` is its old on/off name:
  ``class_balanced=False`` (``--no-class-balanced``) is ``imbalance="ce"`` and
  ``class_balanced=True`` is ``imbalance="cb"``; it is no setting of its own (not in
  ``config.json``) and reads back as ``imbalance == "cb"``;
- ``attention``: mask-guided attention on an intermediate stage plus the mask-guidance loss;
- ``regularizer``: the contrastive feature regulariser on lesion/background features.

Each field carries its help text, its section and its valid range; the command line
(``run.py``), the tests and the ablation all build a :class:`Config` the same way: a
preset (:data:`PRESETS`) and then changes, checked once in ``__post_init__``.

Examples:
    >>> preset("smoke", epochs=3).epochs
    3
    >>> Config(epochs=0)
    Traceback (most recent call last):
    ...
    ValueError: setting 'epochs' must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ALIASES",
    "IMBALANCE_METHODS",
    "PRESETS",
    "SECTIONS",
    "Config",
    "parse_assignment",
    "parse_value",
    "preset",
    "resolve_aliases",
]

# Which part of the run a setting belongs to; a stage's checkpoint depends on some
# sections (see ``Config.section_values``), "runtime" settings never change results.
SECTIONS = ("data", "backbone", "model", "pretrain", "finetune", "training", "runtime")

Rule = tuple[str, Callable[[Any], bool]]


def _at_least(low: float) -> Rule:
    return f">= {low}", lambda v: v >= low


def _between(low: float, high: float, *, open_interval: bool = False) -> Rule:
    if open_interval:
        return f"in ({low}, {high})", lambda v: low < v < high
    return f"in [{low}, {high}]", lambda v: low <= v <= high


def _one_of(*choices: Any) -> Rule:
    return f"one of {list(choices)}", lambda v: v in choices


# The values of the ``imbalance`` setting; see :mod:`.imbalance`.
IMBALANCE_METHODS = ("ce", "cb", "logit_adjusted", "balanced_softmax", "ldam_drw")

# Old switches that are spellings of a setting's value: name -> (setting, value of True,
# value of False). They are accepted wherever a setting is (keyword, flag, ``--set``).
ALIASES: dict[str, tuple[str, str, str]] = {"class_balanced": ("imbalance", "cb", "ce")}

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def setting(
    default: Any, help: str, section: str, rule: Rule | None = None, *, factory: bool = False
) -> Any:
    """A dataclass field with its help text, section and valid range (``rule``)."""
    metadata = {"help": help, "section": section, "rule": rule}
    if factory:
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Config:
    """All settings of a run; see the help of each field (``run.py --help``).

    Raises:
        TypeError: when a setting has the wrong type (naming the setting).
        ValueError: when a setting is out of range (naming the setting and its range).
    """

    # Data
    data: str = setting("synthetic", "'synthetic' (the phantom), 'hannover' or a folder", "data")
    image_size: int = setting(64, "side length of images and masks", "data", _at_least(32))
    phantom_images: int = setting(600, "phantom only: number of images", "data", _at_least(10))
    shortcut_markers: bool = setting(
        False, "phantom only: a class-correlated marker in train/val, not in test", "data"
    )
    data_options: dict[str, Any] = setting(  # noqa: RUF009 (a field with a factory)
        dict, "further options of the data source (JSON object)", "data", factory=True
    )
    skip_bad_files: bool = setting(
        False, "folder only: leave out unreadable files (listed) instead of stopping", "data"
    )
    folds: int = setting(
        0,
        "K >= 2: patient-grouped stratified K-fold cross-validation into out/fold_<k> "
        "(0: one train/val/test split)",
        "data",
        ("0 or >= 2", lambda v: v == 0 or v >= 2),
    )
    fold: int | None = setting(
        None, "with folds: run only this fold (0-based; none: all)", "data", _at_least(0)
    )
    augment: bool = setting(True, "augment the fine-tuning images", "finetune")

    # Model: a torchvision ResNet with a one-channel stem, randomly initialised.
    arch: str = setting(
        "resnet18",
        "the ResNet",
        "backbone",
        _one_of("resnet10", "resnet18", "resnet34", "resnet50"),
    )
    width: int = setting(
        16, "channels of the first stage (64: torchvision's)", "backbone", _at_least(1)
    )
    checkpoint: str | None = setting(
        None, "state_dict of a 1-channel ResNet to start from", "backbone"
    )
    feature_stage: int = setting(2, "the stage attended and regularised", "model", _one_of(2, 3, 4))
    # MaskGuidedAttention's arguments (mode, residual, threshold, teacher_forcing, initial_attention).
    attention_mode: str = setting("hard", "attention gate: 'soft' or 'hard'", "model", _one_of("soft", "hard"))  # fmt: skip
    attention_residual: bool = setting(False, "gate f * (1 + a) instead of f * a", "model")
    attention_threshold: float = setting(
        0.3, "hard gate: open where a >= this", "model", _between(0.0, 1.0, open_interval=True)
    )
    attention_gate_gradient: bool = setting(
        False,
        "classification gradient reaches the attention scorer through the gate"
        " (false: the guidance loss alone trains it)",
        "model",
    )
    teacher_forcing: float = setting(
        0.5, "probability of gating a training image by its mask", "model", _between(0.0, 1.0)
    )
    initial_attention: float = setting(
        0.05, "attention map's initial value", "model", _between(0.0, 1.0, open_interval=True)
    )

    # Ablation switches (all on: the paper's full method).
    pretrain: bool = setting(True, "SimCLR pre-training", "pretrain")
    imbalance: str = setting(
        "cb",
        "loss against the class imbalance (see imbalance.py; --no-class-balanced: 'ce')",
        "finetune",
        _one_of(*IMBALANCE_METHODS),
    )
    attention: bool = setting(True, "mask-guided attention and guidance loss", "finetune")
    regularizer: bool = setting(True, "contrastive feature regulariser", "finetune")

    # Self-supervised pre-training (SimCLR, NT-Xent).
    pretrain_epochs: int = setting(3, "pre-training epochs", "pretrain", _at_least(0))
    pretrain_batch_size: int = setting(64, "pre-training batch (global)", "pretrain", _at_least(2))
    pretrain_lr: float = setting(2e-3, "pre-training learning rate", "pretrain", _at_least(0.0))
    pretrain_warmup_epochs: int = setting(
        1, "linear warm-up epochs, then cosine decay (stepped per batch)", "pretrain", _at_least(0)
    )
    pretrain_probe_images: int = setting(
        200,
        "labelled training and validation images of the per-epoch kNN probe (0: off)",
        "pretrain",
        _at_least(0),
    )
    nt_xent_temperature: float = setting(0.5, "NT-Xent temperature", "pretrain", _at_least(1e-6))
    ssl_dim: int = setting(128, "SimCLR projection dimension", "pretrain", _at_least(1))

    # Supervised fine-tuning.
    epochs: int = setting(10, "fine-tuning epochs", "finetune", _at_least(1))
    batch_size: int = setting(32, "fine-tuning batch (global)", "finetune", _at_least(2))
    lr: float = setting(2e-3, "fine-tuning learning rate", "finetune", _at_least(0.0))
    attention_lr_scale: float = setting(
        10.0, "learning rate of the attention scorer / lr", "finetune", _at_least(1e-12)
    )
    cb_beta: float = setting(
        0.999, "beta of the effective number of samples", "finetune", _between(0.0, 1.0)
    )
    cb_loss_type: str = setting(
        "softmax", "class-balanced loss form", "finetune", _one_of("softmax", "sigmoid", "focal")
    )
    logit_adjust_tau: float = setting(
        1.0,
        "tau of the logit-adjusted loss (imbalance 'logit_adjusted')",
        "finetune",
        _at_least(0.0),
    )
    ldam_max_margin: float = setting(
        1.0,
        "LDAM margin of the rarest class, in logits (imbalance 'ldam_drw')",
        "finetune",
        _at_least(0.0),
    )
    drw_epoch: int | None = setting(
        None,
        "first re-weighted epoch of LDAM-DRW, from 0 (none: round(0.8 * epochs))",
        "finetune",
        _at_least(0),
    )
    guidance_kind: str = setting("bce", "mask-guidance loss", "finetune", _one_of("bce", "mse", "dice"))  # fmt: skip
    guidance_weight: float = setting(10.0, "lambda_g, weight of the guidance loss", "finetune", _at_least(0.0))  # fmt: skip
    regularizer_weight: float = setting(0.1, "lambda_r, weight of the regulariser", "finetune", _at_least(0.0))  # fmt: skip
    regularizer_temperature: float = setting(
        0.1, "temperature of the regulariser", "finetune", _at_least(1e-6)
    )
    regularizer_dim: int = setting(64, "regulariser projection dimension", "finetune", _at_least(1))

    # Both training stages.
    weight_decay: float = setting(1e-4, "AdamW weight decay", "training", _at_least(0.0))
    seed: int = setting(
        0, "seeds data, split, initialisation and batches", "training", _at_least(0)
    )
    amp: bool = setting(True, "float16 autocast and gradient scaling (CUDA only)", "training")

    # Runtime: never changes what a run computes.
    device: str = setting(
        "auto",
        "auto, cpu, cuda or cuda:N",
        "runtime",
        ("auto, cpu, cuda or cuda:N", lambda v: _DEVICE.fullmatch(v) is not None),
    )
    threads: int | None = setting(
        1, "CPU threads per process (0 or none: PyTorch's default)", "runtime", _at_least(0)
    )
    num_workers: int = setting(0, "data-loading processes", "runtime", _at_least(0))
    resume: bool = setting(False, "continue each stage from its checkpoint", "runtime")
    stop_after: int | None = setting(
        None, "stop a stage after N epochs (then --resume)", "runtime", _at_least(1)
    )
    progress: bool = setting(True, "progress bars", "runtime")

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(Config)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _check_type(f.name, value, hints[f.name])
            rule: Rule | None = f.metadata["rule"]
            if rule is not None and value is not None and not rule[1](value):
                raise ValueError(f"setting {f.name!r} must be {rule[0]}, got {value!r}")
        owned = {
            "num_images": "phantom_images",
            "shortcut_markers": "shortcut_markers",
            "skip_bad_files": "skip_bad_files",
            "fold": "fold",
        }
        for key in sorted(set(self.data_options) & set(owned)):
            raise ValueError(
                f"setting 'data_options' may not hold {key!r}: set {owned[key]!r} instead"
            )
        self._check_folds()

    def _check_folds(self) -> None:
        if self.fold is not None and self.fold >= self.folds:
            raise ValueError(
                f"setting 'fold' must be below 'folds' ({self.folds}), got {self.fold}"
            )

    @classmethod
    def smoke(cls, **overrides: Any) -> Config:
        """The ``smoke`` preset (see :data:`PRESETS`) with ``overrides``."""
        return preset("smoke", **overrides)

    @property
    def class_balanced(self) -> bool:
        """Whether the loss is the class-balanced one (the old switch; see ``imbalance``)."""
        return self.imbalance == "cb"

    def drw_start(self) -> int:
        """The first re-weighted epoch of LDAM-DRW (0-based)."""
        return round(0.8 * self.epochs) if self.drw_epoch is None else self.drw_epoch

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (checked like a new config; aliases allowed)."""
        return dataclasses.replace(self, **resolve_aliases(changes))

    def data_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``build_datasets`` besides source, image size and seed."""
        phantom: dict[str, Any] = (
            {"num_images": self.phantom_images, "shortcut_markers": self.shortcut_markers}
            if self.data == "synthetic"
            else {}
        )
        skip: dict[str, Any] = {"skip_bad_files": True} if self.skip_bad_files else {}
        return {**phantom, **skip, **self.fold_kwargs(), **self.data_options}

    def fold_kwargs(self) -> dict[str, Any]:
        """``{"fold": (fold, folds)}`` for ``build_datasets`` in a fold's run, else nothing."""
        return {} if self.fold is None else {"fold": (self.fold, self.folds)}

    def section_values(self, *sections: str) -> dict[str, Any]:
        """The settings of ``sections``, by name (what a stage's checkpoint depends on)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.metadata["section"] in sections
        }

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


def _check_type(name: str, value: Any, expected: Any) -> None:
    allowed = typing.get_args(expected) if typing.get_origin(expected) is not None else ()
    if typing.get_origin(expected) is dict:
        allowed = (dict,)
    elif not allowed:
        allowed = (expected,)
    if value is None and type(None) in allowed:
        return
    kinds = tuple(t for t in allowed if t is not type(None))
    ok = any(
        isinstance(value, t) and not (isinstance(value, bool) and t is not bool) for t in kinds
    ) or (float in kinds and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
        raise TypeError(f"setting {name!r} must be {names}, got {value!r}")


PRESETS: dict[str, dict[str, Any]] = {
    # The quick default: the dataclass's own defaults.
    "quick": {},
    # A tiny run of every stage (tens of seconds on CPU), for CI and tests.
    "smoke": {
        "image_size": 32,
        "phantom_images": 96,
        "arch": "resnet10",
        "pretrain_epochs": 1,
        "pretrain_batch_size": 16,
        "epochs": 2,
        "batch_size": 16,
        "ssl_dim": 32,
        "regularizer_dim": 16,
        "progress": False,
    },
}


PRESETS["covid_cxr"] = {
    # The real radiographs with radiologists' lesion masks (``--data covid-cxr-segmentations``):
    # 100 images of 73 patients, so 5-fold patient-grouped cross-validation, and a
    # network small enough for all folds in minutes on two CPU cores. The hard gate
    # that starts near 0.05 deletes most features of an image whose attention is still
    # untrained; on this set the soft residual gate f (1 + a) learns (benchmarks/README.md).
    "data": "covid-cxr-segmentations",
    "folds": 5,
    "image_size": 64,
    "arch": "resnet10",
    "width": 16,
    "attention_mode": "soft",
    "attention_residual": True,
    "attention_gate_gradient": True,
    "teacher_forcing": 0.0,
    "initial_attention": 0.5,
    "pretrain_epochs": 10,
    "pretrain_batch_size": 32,
    "epochs": 30,
    "batch_size": 16,
    "ssl_dim": 64,
    "regularizer_dim": 32,
    "progress": False,
}


def resolve_aliases(changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` with every alias of :data:`ALIASES` replaced by the setting it spells.

    Raises:
        TypeError: when an alias is not a bool.
        ValueError: when an alias and its setting are both given and disagree.
    """
    resolved = dict(changes)
    for alias, (name, on, off) in ALIASES.items():
        if alias not in resolved:
            continue
        value = resolved.pop(alias)
        if not isinstance(value, bool):
            raise TypeError(f"setting {alias!r} must be bool, got {value!r}")
        implied = on if value else off
        if name in resolved and resolved[name] != implied:
            raise ValueError(
                f"{alias}={value} means {name}={implied!r}, but {name}={resolved[name]!r} was"
                f" also given; give only {name!r}"
            )
        resolved[name] = implied
    return resolved


def preset(name: str, **changes: Any) -> Config:
    """The preset ``name`` of :data:`PRESETS` with ``changes`` (field names as keywords).

    Raises:
        ValueError: on an unknown preset or setting name, or a value out of range.
        TypeError: on a value of the wrong type.
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    changes = resolve_aliases(changes)
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; the settings are {sorted(known)}")
    return Config(**{**PRESETS[name], **changes})


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_value(name: str, text: str) -> Any:
    """The value of setting ``name`` written as ``text`` (as on the command line).

    Booleans are ``true``/``false`` (or 1/0, yes/no, on/off), ``none`` is ``None``
    where a setting allows it, and ``data_options`` is a JSON object.

    Raises:
        ValueError: on an unknown setting or a value that does not parse, naming the setting.
    """
    hints = {**typing.get_type_hints(Config), **{alias: bool for alias in ALIASES}}
    if name not in hints:
        close = difflib.get_close_matches(name, hints, n=3)
        hint = f"; did you mean {close}?" if close else f"; the settings are {sorted(hints)}"
        raise ValueError(f"unknown setting {name!r}{hint}")
    expected = hints[name]
    kinds = typing.get_args(expected) if typing.get_origin(expected) is not dict else (dict,)
    kinds = kinds or (expected,)
    if type(None) in kinds and text.strip().lower() in ("none", "null"):
        return None
    kind = next(t for t in kinds if t is not type(None))
    try:
        if kind is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(text)
            return text.lower() in _TRUE
        if kind is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError(text)
            return value
        return kind(text)
    except ValueError:
        raise ValueError(
            f"setting {name!r} expects {getattr(kind, '__name__', kind)}, got {text!r}"
        ) from None


def parse_assignment(item: str) -> tuple[str, Any]:
    """``(name, value)`` of a ``KEY=VALUE`` string (see :func:`parse_value`)."""
    key, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"a setting is written KEY=VALUE, got {item!r}")
    return key.strip(), parse_value(key.strip(), value)
