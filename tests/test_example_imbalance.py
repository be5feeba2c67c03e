"""The example's imbalance setting, its losses, and the evaluation of the minority class.

The ``imbalance`` setting and its old switch ``class_balanced`` (one route: the alias
maps onto the setting), the loss of each method against the library function, the
LDAM-DRW schedule (also across a resume), the Wilson intervals against their formula,
the confusion matrix per true class, the post-hoc operating point against a plain loop,
and the report's explanation of a zero recall.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrast_attn import MaskGuidedAttention
from contrast_attn.functional import (
    balanced_softmax_loss,
    class_balanced_loss,
    class_balanced_weights,
    ldam_loss,
    logit_adjusted_loss,
)
from examples.deep_pneumonia.checkpoint import load
from examples.deep_pneumonia.config import Config, preset
from examples.deep_pneumonia.evaluate import (
    Predictions,
    class_intervals,
    classification_metrics,
    normalised_confusion,
    operating_point,
    predict,
    wilson_interval,
)
from examples.deep_pneumonia.finetune import build_net
from examples.deep_pneumonia.imbalance import ImbalanceLoss
from examples.deep_pneumonia.phantom import PhantomDataset
from examples.deep_pneumonia.pretrain import build_backbone
from examples.deep_pneumonia.report import write_report
from examples.deep_pneumonia.run import build_parser, config_from_args, run_pipeline
from examples.deep_pneumonia.training import setup_runtime

COUNTS = [252, 105, 42, 21]
NAMES = ["normal", "bacterial", "viral", "covid19"]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def parse(*argv: str) -> Config:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_class_balanced_is_an_alias_of_the_imbalance_setting(tmp_path: Path) -> None:
    assert Config().imbalance == "cb" and Config().class_balanced
    assert (
        parse("--no-class-balanced")
        == parse("--imbalance", "ce")
        == preset("quick", imbalance="ce")
    )
    assert parse("--set", "class_balanced=false").imbalance == "ce"
    assert parse("--class-balanced").imbalance == "cb"
    assert preset("quick", class_balanced=False).imbalance == "ce"
    assert Config().replace(class_balanced=False) == Config(imbalance="ce")
    assert not Config(imbalance="ldam_drw").class_balanced
    with pytest.raises(ValueError, match="class_balanced=False means imbalance='ce'"):
        parse("--no-class-balanced", "--imbalance", "ldam_drw")
    with pytest.raises(TypeError, match="class_balanced"):
        preset("quick", class_balanced="no")
    with pytest.raises(ValueError, match="imbalance"):
        Config(imbalance="focal")
    # One route: the alias is no setting of its own (not in config.json or the resume record).
    assert "class_balanced" not in Config().to_dict()
    assert Config().section_values("finetune")["imbalance"] == "cb"


def test_drw_epoch_default_is_four_fifths_of_the_epochs() -> None:
    assert Config(epochs=10).drw_start() == 8
    assert Config(epochs=3).drw_start() == 2
    assert Config(epochs=10, drw_epoch=0).drw_start() == 0


@pytest.mark.parametrize("method", ["ce", "cb", "logit_adjusted", "balanced_softmax", "ldam_drw"])
def test_each_method_is_its_library_loss(method: str) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 4, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 4, (16,), generator=gen)
    cfg = Config(imbalance=method, epochs=10, logit_adjust_tau=0.7, ldam_max_margin=0.8)
    loss = ImbalanceLoss(cfg, COUNTS)
    expected = {
        "ce": lambda: F.cross_entropy(logits, target),
        "cb": lambda: class_balanced_loss(logits, target, COUNTS, beta=cfg.cb_beta),
        "logit_adjusted": lambda: logit_adjusted_loss(logits, target, COUNTS, tau=0.7),
        "balanced_softmax": lambda: balanced_softmax_loss(logits, target, COUNTS),
        "ldam_drw": lambda: ldam_loss(logits, target, COUNTS, max_margin=0.8, scale=1.0),
    }[method]()
    loss.set_epoch(0)
    torch.testing.assert_close(loss(logits, target), expected)


def test_ldam_drw_reweights_from_the_deferral_epoch() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 4, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 4, (16,), generator=gen)
    loss = ImbalanceLoss(Config(imbalance="ldam_drw", epochs=10), COUNTS)
    weights = class_balanced_weights(COUNTS, Config().cb_beta)
    for epoch in range(10):
        loss.set_epoch(epoch)
        w = weights if epoch >= 8 else None
        expected = ldam_loss(logits, target, COUNTS, max_margin=1.0, scale=1.0, weight=w)
        torch.testing.assert_close(loss(logits, target), expected)
    assert "weight" not in loss.state_dict()  # a function of the epoch, set again on resume


def test_ldam_drw_run_resumes_exactly_across_the_deferral(tmp_path: Path) -> None:
    cfg = preset(
        "smoke",
        image_size=32,
        phantom_images=60,
        pretrain=False,
        epochs=3,
        drw_epoch=1,
        batch_size=8,
        augment=False,
        device="cpu",
        imbalance="ldam_drw",
    )
    full = run_pipeline(cfg, tmp_path / "full")
    assert run_pipeline(cfg.replace(stop_after=2), tmp_path / "cut") is None
    assert run_pipeline(cfg.replace(resume=True), tmp_path / "cut") == full
    a, b = (load(tmp_path / run / "checkpoints/finetune.pt") for run in ("full", "cut"))
    assert a["history"] == b["history"]
    saved = json.loads((tmp_path / "full/config.json").read_text())
    assert saved["imbalance"] == "ldam_drw" and "class_balanced" not in saved


def wilson_reference(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson (1927): the roots p of (p - k/n)^2 = z^2 p (1 - p) / n, solved as a quadratic."""
    a = 1 + z * z / n
    b = -(2 * k / n + z * z / n)
    c = (k / n) ** 2
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


@pytest.mark.parametrize(("k", "n"), [(0, 2), (1, 4), (5, 10), (10, 10), (37, 100), (3, 2000)])
def test_wilson_interval_matches_its_quadratic(k: int, n: int) -> None:
    low, high = wilson_interval(k, n, z=1.959963984540054)  # type: ignore[misc]
    ref_low, ref_high = wilson_reference(k, n)
    assert low == pytest.approx(max(ref_low, 0.0), abs=1e-12)
    assert high == pytest.approx(min(ref_high, 1.0), abs=1e-12)
    assert low <= k / n <= high
    assert wilson_interval(0, 0) is None


def test_class_intervals_and_normalised_confusion() -> None:
    labels = np.array([0, 0, 0, 1, 1, 3, 3])
    predicted = np.array([0, 0, 1, 1, 0, 0, 0])
    rows = class_intervals(labels, predicted, NAMES)
    assert rows["normal"]["true_positives"] == 2 and rows["normal"]["predicted"] == 5
    assert rows["covid19"]["true_positives"] == 0 and rows["covid19"]["recall_ci95"][0] == 0.0
    assert rows["viral"]["recall_ci95"] is None and rows["viral"]["precision_ci95"] is None
    assert rows["covid19"]["precision_ci95"] is None  # never predicted
    matrix = np.array([[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [2, 0, 0, 0]])
    normalised = normalised_confusion(matrix)
    assert normalised[2] is None and normalised[3] == [1.0, 0.0, 0.0, 0.0]
    assert normalised[0] == pytest.approx([2 / 3, 1 / 3, 0.0, 0.0])


def predictions(labels: np.ndarray, logits: np.ndarray) -> Predictions:
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    nan = np.full(len(labels), np.nan)
    return Predictions(labels, probs / probs.sum(axis=1, keepdims=True), nan, nan, nan)


def test_operating_point_is_the_post_hoc_rule_of_a_plain_loop() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), [60, 25, 10, 5])
    # A model biased toward the frequent classes: the training prior added to its scores.
    logits = 1.5 * np.eye(4)[labels] + rng.normal(size=(100, 4)) + np.log(np.array(COUNTS) / 420)
    pred = predictions(labels, logits)
    point = operating_point(pred, NAMES, COUNTS, tune=pred)
    prior = np.array(COUNTS) / sum(COUNTS)
    for key, tau in (("tau_1", 1.0), ("tau_validation", point["tau_validation"]["tau"])):
        decided = [
            int(np.argmax([logits[i, c] - tau * math.log(prior[c]) for c in range(4)]))
            for i in range(100)
        ]
        recall = [
            np.mean([decided[i] == c for i in range(100) if labels[i] == c]) for c in range(4)
        ]
        assert point[key]["balanced_accuracy"] == pytest.approx(np.mean(recall))
        assert point[key]["recall"]["covid19"] == pytest.approx(recall[3])
    assert point["tau_1"]["minority_recall"] > point["argmax"]["minority_recall"]
    assert (
        point["tau_validation"]["validation_balanced_accuracy"]
        >= point["tau_1"]["balanced_accuracy"]
    )


def test_report_says_why_a_recall_is_zero(tmp_path: Path) -> None:
    labels = np.array([0] * 6 + [1] * 3 + [2] * 2 + [3] * 2)
    predicted = np.array([0] * 6 + [1, 1, 0] + [2, 0] + [0, 2])
    pred = predictions(labels, 4.0 * np.eye(4)[predicted])
    metrics = classification_metrics(pred, NAMES, COUNTS)
    metrics["operating_point"] = operating_point(pred, NAMES, COUNTS)
    write_report(Config(), metrics, tmp_path / "report.md")
    report = (tmp_path / "report.md").read_text()
    assert (
        "0 of 2 covid19 test images found; the model predicts normal for 1, viral for 1 of them"
        in report
    )
    assert "| covid19 | never predicted | 0.000 (0/2) [0.00, 0.66] |" in report
    assert "## Operating point" in report and "adjusted, tau = 1" in report
    assert "imbalance loss 'cb'" in report


def test_report_counts_the_images_a_closed_hard_gate_hides(tmp_path: Path) -> None:
    labels = np.array([0] * 6 + [1] * 3 + [2] * 2 + [3] * 4)
    predicted = np.array([0] * 6 + [1, 1, 0] + [2, 2] + [0, 0, 0, 3])
    pred = predictions(labels, 4.0 * np.eye(4)[predicted])
    pred.gate_closed = np.array(
        [True] * 6 + [False, False, True] + [False] * 2 + [True] * 3 + [False]
    )
    pred.gate_threshold = 0.3
    metrics = classification_metrics(pred, NAMES, COUNTS)
    assert metrics["closed_gate"]["per_class"]["covid19"] == {"closed": 3, "images": 4}
    assert metrics["closed_gate"]["per_class"]["normal"] == {"closed": 6, "images": 6}
    write_report(Config(), metrics, tmp_path / "report.md")
    report = (tmp_path / "report.md").read_text()
    assert (
        "reached 0.3) on: normal 6 of 6, bacterial 1 of 3, viral 0 of 2, covid19 3 of 4" in report
    )
    assert "Most covid19 test images are among them" in report
    # Without a hard gate there is nothing to count, and the report says nothing of it.
    pred.gate_closed = pred.gate_threshold = None
    metrics = classification_metrics(pred, NAMES, COUNTS)
    assert metrics["closed_gate"] is None
    write_report(Config(), metrics, tmp_path / "report.md")
    assert "Hard gate closed" not in (tmp_path / "report.md").read_text()


def test_predictions_flag_closed_gates_only_for_a_hard_non_residual_gate() -> None:
    cfg = preset("smoke", device="cpu")
    rt = setup_runtime(cfg)
    data = PhantomDataset(range(6), [0, 1, 2, 3, 0, 1], seed=0, image_size=cfg.image_size)
    net = build_net(cfg, build_backbone(cfg), 4)
    assert isinstance(net.attention, MaskGuidedAttention)
    torch.nn.init.constant_(net.attention.scorer[-1].bias, -20.0)  # the map is ~0 everywhere
    pred = predict(net, data, rt, 4)
    assert pred.gate_threshold == cfg.attention_threshold
    assert pred.gate_closed is not None and bool(pred.gate_closed.all())
    np.testing.assert_allclose(pred.probs, np.broadcast_to(pred.probs[0], pred.probs.shape))
    net.attention.residual = True
    assert predict(net, data, rt, 4).gate_closed is None
