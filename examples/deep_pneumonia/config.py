"""Every setting of the pipeline in one dataclass, with the quick default and a smoke preset.

The defaults are the *quick* run: the whole pipeline (pre-training, fine-tuning,
evaluation) on the built-in phantom in a few minutes on two CPU cores. Four switches
turn the paper's components on and off (the ablation):

- ``pretrain``: self-supervised SimCLR pre-training with NT-Xent on the training images;
- ``class_balanced``: the class-balanced loss (Cui et al.) instead of cross-entropy;
- ``attention``: mask-guided attention on an intermediate stage plus the mask-guidance loss;
- ``regularizer``: the contrastive feature regulariser on lesion/background features.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Config"]


@dataclass
class Config:
    """All settings of a run; ``run.py`` fills it from the command line.

    Attributes are grouped as data, model, ablation switches, pre-training,
    fine-tuning and runtime. ``phantom_images`` and ``shortcut_markers`` configure
    the phantom (``data="synthetic"``); ``data_options`` holds further keyword
    arguments of ``build_datasets`` for any source (e.g. ``task`` for "hannover").
    """

    # Data
    data: str = "synthetic"
    image_size: int = 64
    phantom_images: int = 600
    shortcut_markers: bool = False
    data_options: dict[str, Any] = field(default_factory=dict)
    augment: bool = True

    # Model: a torchvision ResNet with a one-channel stem, randomly initialised.
    arch: str = "resnet18"
    width: int = 16  # channels of the first stage; 64 is torchvision's ResNet exactly
    # Attention: on the 8 x 8 map of stage 2 at 64 px (stage 3's 4 x 4 cells are too
    # coarse to tell a lesion from a corner marker), a hard gate f * 1[a >= 0.5] that
    # deletes what is not attended, teacher forcing so that the later stages learn from
    # lesion-gated features, and a scorer that starts at the lesion prior and learns
    # faster than the trunk. With the earlier defaults (stage 3, soft f * (1 + a), no
    # forcing, prior 0.5, one learning rate, guidance weight 0.5) the guidance loss was
    # still above that of a constant map after 10 epochs and the model read the marker
    # (benchmarks/README.md, "Ablation").
    feature_stage: int = 2  # the stage attended and regularised (2, 3 or 4)
    checkpoint: str | None = None  # a user's trunk weights to start from
    attention_mode: str = "hard"  # or "soft" (the map itself gates)
    attention_residual: bool = False  # gate f * a (True: f * (1 + a), keeps the rest)
    teacher_forcing: float = 0.5  # probability of gating a training image by its mask
    attention_prior: float = 0.05  # initial attention everywhere (sets the scorer's bias)
    attention_lr_scale: float = 10.0  # learning rate of the attention scorer / lr
    ssl_dim: int = 128
    regularizer_dim: int = 64

    # Ablation switches (all on: the paper's full method).
    pretrain: bool = True
    class_balanced: bool = True
    attention: bool = True
    regularizer: bool = True

    # Self-supervised pre-training (SimCLR, NT-Xent).
    pretrain_epochs: int = 3
    pretrain_batch_size: int = 64
    pretrain_lr: float = 2e-3
    nt_xent_temperature: float = 0.5

    # Supervised fine-tuning.
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    cb_beta: float = 0.999  # beta of the effective number of samples
    cb_loss_type: str = "softmax"
    guidance_kind: str = "bce"
    guidance_weight: float = 10.0
    regularizer_weight: float = 0.1
    regularizer_temperature: float = 0.1

    # Runtime.
    seed: int = 0
    device: str = "auto"
    threads: int | None = 1  # CPU threads per process; None = PyTorch's default
    amp: bool = True  # float16 autocast and gradient scaling, on CUDA only
    num_workers: int = 0
    resume: bool = False  # continue each stage from its checkpoint
    stop_after: int | None = None  # stop a stage after this many epochs (then resume)
    progress: bool = True

    def __post_init__(self) -> None:
        checks = {
            "image_size": self.image_size >= 32,
            "feature_stage": self.feature_stage in (2, 3, 4),
            "pretrain_epochs": self.pretrain_epochs >= 0,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "pretrain_batch_size": self.pretrain_batch_size >= 2,
            "num_workers": self.num_workers >= 0,
            "threads": self.threads is None or self.threads >= 1,
            "teacher_forcing": 0.0 <= self.teacher_forcing <= 1.0,
            "attention_prior": 0.0 < self.attention_prior < 1.0,
            "attention_lr_scale": self.attention_lr_scale > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            given = {name: getattr(self, name) for name in bad}
            raise ValueError(f"invalid configuration values: {given}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"stop_after must be None or >= 1, got {self.stop_after}")

    @classmethod
    def smoke(cls, **overrides: Any) -> Config:
        """A tiny run of every stage (tens of seconds on CPU), for CI and tests."""
        settings: dict[str, Any] = {
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
        }
        settings.update(overrides)
        return cls(**settings)

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def data_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``build_datasets`` besides source, image size and seed."""
        phantom: dict[str, Any] = (
            {"num_images": self.phantom_images, "shortcut_markers": self.shortcut_markers}
            if self.data == "synthetic"
            else {}
        )
        return {**phantom, **self.data_options}

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict."""
        return dataclasses.asdict(self)
