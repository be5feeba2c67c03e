"""The Deep Pneumonia example's self-supervised building blocks: probes, schedule,
pre-training augmentation and the phantom's nuisance variation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torchvision.transforms import v2

from examples.deep_pneumonia.model import Backbone
from examples.deep_pneumonia.phantom import render_radiograph
from examples.deep_pneumonia.probe import (
    embed,
    knn_predict,
    knn_probe,
    linear_probe,
    pixel_features,
    probe_backbone,
    probe_features,
    scores,
)
from examples.deep_pneumonia.schedule import warmup_cosine, warmup_cosine_scheduler
from examples.deep_pneumonia.transforms import SimCLRAugment

# ---------------------------------------------------------------- probes


def knn_reference(
    train: np.ndarray, labels: np.ndarray, test: np.ndarray, k: int, t: float, classes: int
) -> list[int]:
    """The weighted kNN vote written from the formula, one test point at a time, float64."""
    predictions = []
    for x in test:
        sims = [float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))) for y in train]
        nearest = sorted(range(len(train)), key=lambda j: -sims[j])[:k]
        votes = [0.0] * classes
        for j in nearest:
            votes[int(labels[j])] += math.exp(sims[j] / t)
        predictions.append(max(range(classes), key=lambda c: votes[c]))
    return predictions


@given(st.integers(0, 10_000), st.sampled_from([1, 3, 7]), st.sampled_from([0.05, 0.1, 1.0]))
def test_knn_predict_matches_the_formula(seed: int, k: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    train = torch.randn(30, 5, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (30,), generator=generator)
    test = torch.randn(12, 5, generator=generator, dtype=torch.float64)
    expected = knn_reference(train.numpy(), labels.numpy(), test.numpy(), k, temperature, 3)
    got = knn_predict(train, labels, test, num_classes=3, k=k, temperature=temperature)
    assert got.tolist() == expected


def test_knn_predict_matches_lightly() -> None:
    benchmarking = pytest.importorskip("lightly.utils.benchmarking")
    generator = torch.Generator().manual_seed(0)
    train = torch.nn.functional.normalize(torch.randn(200, 16, generator=generator), dim=1)
    labels = torch.randint(0, 4, (200,), generator=generator)
    test = torch.nn.functional.normalize(torch.randn(50, 16, generator=generator), dim=1)
    theirs = benchmarking.knn_predict(test, train.T, labels, 4, knn_k=20, knn_t=0.1)[:, 0]
    ours = knn_predict(train, labels, test, num_classes=4, k=20, temperature=0.1)
    assert torch.equal(ours, theirs)


def test_knn_predict_is_finite_at_a_tiny_temperature() -> None:
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    test = torch.tensor([[1.0, 0.1]])
    # exp(1 / 1e-3) overflows float32 without the max subtraction.
    assert knn_predict(
        train, torch.tensor([0, 1, 1]), test, num_classes=2, k=3, temperature=1e-3
    ).tolist() == [0]


def macro_f1_reference(truth: list[int], guess: list[int], classes: int) -> float:
    f1s = []
    for c in range(classes):
        tp = sum(t == c and g == c for t, g in zip(truth, guess))
        fp = sum(t != c and g == c for t, g in zip(truth, guess))
        fn = sum(t == c and g != c for t, g in zip(truth, guess))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / classes


def test_scores_match_a_hand_count() -> None:
    truth = [0, 0, 1, 1, 2, 2, 2, 0]
    guess = [0, 1, 1, 1, 2, 0, 2, 0]
    result = scores(torch.tensor(guess), torch.tensor(truth), 4)
    assert result["accuracy"] == pytest.approx(6 / 8)
    assert result["macro_f1"] == pytest.approx(macro_f1_reference(truth, guess, 4))


def clusters(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well separated Gaussian clusters in 8 dimensions."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = 6.0 * torch.eye(8)[:3]
    return centres[labels] + torch.randn(n, 8, generator=generator), labels


def test_probes_separate_separable_features_and_not_noise() -> None:
    train, train_labels = clusters(90, 0)
    test, test_labels = clusters(60, 1)
    for probe in (knn_probe, linear_probe):
        assert probe(train, train_labels, test, test_labels)["macro_f1"] == 1.0
        noise = torch.randn(90, 8, generator=torch.Generator().manual_seed(2))
        chance = probe(noise, train_labels, test, test_labels)["accuracy"]
        assert chance < 0.6


@pytest.mark.parametrize("probe", [knn_probe, linear_probe])
def test_probes_reject_bad_shapes(probe) -> None:  # type: ignore[no-untyped-def]
    feats, labels = clusters(12, 0)
    with pytest.raises(ValueError, match="train_labels must be"):
        probe(feats, labels[:5], feats, labels)
    with pytest.raises(ValueError, match=r"test_feats must be \[N, D\]"):
        probe(feats, labels, feats[0], labels)


def test_probe_rejects_bad_hyper_parameters() -> None:
    feats, labels = clusters(12, 0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn_probe(feats, labels, feats, labels, k=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        knn_probe(feats, labels, feats, labels, temperature=0.0)
    with pytest.raises(ValueError, match="at least two classes"):
        linear_probe(feats, torch.zeros(12, dtype=torch.long), feats, labels)


def test_pixel_features_are_block_means() -> None:
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = images.reshape(3, 1, 8, 4, 8, 4).mean(dim=(3, 5)).flatten(1)
    torch.testing.assert_close(pixel_features(images, 8), expected)
    with pytest.raises(ValueError, match="resolution must lie in"):
        pixel_features(images, 33)


def test_embed_is_frozen_eval_mode_and_restores_training() -> None:
    torch.manual_seed(0)
    backbone = Backbone("resnet10", width=4)
    images = torch.rand(10, 1, 32, 32)
    backbone.train()
    features = embed(backbone, images, batch_size=4)
    assert backbone.training and features.shape == (10, 32) and not features.requires_grad
    backbone.eval()
    with torch.no_grad():
        torch.testing.assert_close(features, backbone(images))


def test_probe_backbone_is_both_probes_on_frozen_features() -> None:
    torch.manual_seed(0)
    backbone = Backbone("resnet10", width=4)
    images, labels = torch.rand(24, 1, 32, 32), torch.arange(24) % 3
    got = probe_backbone(
        backbone, images[:12], labels[:12], images[12:], labels[12:], num_classes=3, k=5
    )
    feats = embed(backbone, images)
    knn = knn_probe(feats[:12], labels[:12], feats[12:], labels[12:], k=5, num_classes=3)
    linear = linear_probe(feats[:12], labels[:12], feats[12:], labels[12:], num_classes=3)
    assert got == {
        "knn_macro_f1": knn["macro_f1"],
        "knn_accuracy": knn["accuracy"],
        "linear_macro_f1": linear["macro_f1"],
        "linear_accuracy": linear["accuracy"],
    }
    only_knn = probe_features(
        feats[:12], labels[:12], feats[12:], labels[12:], num_classes=3, k=5, linear=False
    )
    assert set(only_knn) == {"knn_macro_f1", "knn_accuracy"}


# ---------------------------------------------------------------- schedule


def test_warmup_cosine_values() -> None:
    total, warmup = 110, 10
    factors = [warmup_cosine(t, total, warmup) for t in range(total + 2)]
    assert factors[:warmup] == pytest.approx([(t + 1) / warmup for t in range(warmup)])
    assert factors[warmup] == 1.0
    assert factors[warmup + 50] == pytest.approx(0.5)
    assert factors[total] == 0.0 and factors[total + 1] == 0.0
    decay = factors[warmup:total]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert warmup_cosine(total - 1, total, warmup, final_scale=0.1) > 0.1
    assert warmup_cosine(0, 5, 0) == 1.0


def test_warmup_cosine_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        warmup_cosine(0, 0, 0)
    with pytest.raises(ValueError, match="warmup_steps must lie in"):
        warmup_cosine(0, 5, 6)
    with pytest.raises(ValueError, match="final_scale must lie in"):
        warmup_cosine_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))]), 5, 1, 2.0)


def test_scheduler_follows_the_factor_and_resumes() -> None:
    def make() -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
        return optimizer, warmup_cosine_scheduler(optimizer, 20, 4, final_scale=0.05)

    optimizer, scheduler = make()
    seen = []
    for _ in range(20):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.4 * warmup_cosine(t, 20, 4, 0.05) for t in range(20)])
    first, first_scheduler = make()
    for _ in range(7):
        first.step()
        first_scheduler.step()
    second, second_scheduler = make()
    second_scheduler.load_state_dict(first_scheduler.state_dict())
    second.step()
    second_scheduler.step()
    assert second.param_groups[0]["lr"] == pytest.approx(seen[8])


def test_scheduler_replayed_to_a_step_has_the_uninterrupted_rates() -> None:
    # A stage resumed at step 7 rebuilds its scheduler on the loaded optimiser.
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
    scheduler = warmup_cosine_scheduler(optimizer, 20, 4, final_scale=0.05)
    seen = []
    for _ in range(20):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    resumed = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
    warmup_cosine_scheduler(resumed, 20, 4, final_scale=0.05)
    saved = resumed.state_dict()  # what a checkpoint holds: lr and initial_lr of the group
    again = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    again.load_state_dict(saved)
    replayed = warmup_cosine_scheduler(again, 20, 4, final_scale=0.05, start=7)
    rest = []
    for _ in range(13):
        rest.append(again.param_groups[0]["lr"])
        again.step()
        replayed.step()
    assert rest == seen[7:]
    with pytest.raises(ValueError, match="start must be >= 0"):
        warmup_cosine_scheduler(again, 20, 4, start=-1)


# ---------------------------------------------------------------- augmentation


def test_simclr_augment_never_flips_by_default() -> None:
    augment = SimCLRAugment(32)
    assert not any(isinstance(t, v2.RandomHorizontalFlip) for t in augment.geometric.transforms)
    # An image bright on its left stays bright on its left in every view.
    image = torch.zeros(1, 32, 32)
    image[:, :, :12] = 0.9
    torch.manual_seed(0)
    for _ in range(20):
        view = augment(image)
        assert view[..., :10].mean() > view[..., -10:].mean() + 0.3


def test_simclr_augment_varies_intensity_and_stays_in_range() -> None:
    image = torch.from_numpy(render_radiograph(1, seed=0, index=0, image_size=32).image)[None]
    augment = SimCLRAugment(32)
    torch.manual_seed(0)
    views = torch.stack([augment(image) for _ in range(40)])
    assert views.min() >= 0.0 and views.max() <= 1.0
    means = views.mean(dim=(1, 2, 3))
    assert means.std() > 0.02


# ---------------------------------------------------------------- phantom nuisance


def test_phantom_varies_exposure_and_position_per_image() -> None:
    """Normal images differ in brightness and in where the lungs lie (patient position)."""
    renders = [render_radiograph(0, seed=0, index=i, image_size=64) for i in range(40)]
    brightness = [r.image[r.lungs].mean() for r in renders]
    assert np.std(brightness) > 0.02
    centres = [np.argwhere(r.lungs).mean(axis=0) for r in renders]
    assert np.std([c[0] for c in centres]) > 1.0 and np.std([c[1] for c in centres]) > 1.0
    areas = [r.lungs.sum() for r in renders]
    assert np.std(areas) / np.mean(areas) > 0.05
