"""What frozen features know: a kNN and a linear probe on a small labelled split.

A self-supervised loss says how well two views of an image match, not whether the
features separate the classes. The probes answer that, as lightly's benchmark callbacks
do: embed a small labelled *probe-train* split and a *probe-test* split with the frozen
backbone (globally pooled features), then classify the test features

* by a weighted k-nearest-neighbour vote (Wu et al., 2018, as in lightly's
  ``knn_predict``): each of the ``k`` training features most cosine-similar to a test
  feature votes for its class with weight :math:`\\exp(s / \\tau)`;
* by multinomial logistic regression on standardised features (scikit-learn), with
  class weights inversely proportional to the class frequencies.

Both return accuracy and macro-F1 (each class's F1 counts the same, so a rare class
the features ignore shows). :func:`pixel_features` gives the baseline every backbone
must beat: the image itself, area-downsampled to a few pixels a side.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler
from torch import nn

__all__ = [
    "embed",
    "knn_predict",
    "knn_probe",
    "linear_probe",
    "pixel_features",
    "probe_backbone",
    "probe_features",
    "scores",
]


def _check_split(features: torch.Tensor, labels: torch.Tensor, name: str) -> None:
    if features.ndim != 2:
        raise ValueError(f"{name}_feats must be [N, D], got shape {tuple(features.shape)}")
    if labels.shape != (features.shape[0],):
        raise ValueError(
            f"{name}_labels must be [N] with N = {features.shape[0]} ({name}_feats rows), "
            f"got shape {tuple(labels.shape)}"
        )
    if features.shape[0] == 0:
        raise ValueError(f"{name}_feats is empty")


def scores(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 of ``predicted`` against ``labels`` (both ``[N]`` int).

    Macro-F1 averages the F1 of every class in ``range(num_classes)``; a class that is
    neither present nor predicted counts as 0.
    """
    truth, guess = labels.cpu().numpy(), predicted.cpu().numpy()
    return {
        "accuracy": float((truth == guess).mean()),
        "macro_f1": float(
            f1_score(
                truth, guess, labels=list(range(num_classes)), average="macro", zero_division=0
            )
        ),
    }


def knn_predict(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Classes of ``test_feats`` by a similarity-weighted vote of their ``k`` nearest neighbours.

    .. math::

        \\hat y(x) = \\arg\\max_c \\sum_{j \\in N_k(x)} \\exp(s_j / \\tau)\\,[y_j = c],
        \\qquad s_j = \\frac{x^\\top x_j}{\\lVert x \\rVert \\lVert x_j \\rVert}

    Args:
        train_feats: ``[N, D]`` features of the labelled split.
        train_labels: ``[N]`` their classes in ``[0, num_classes)``.
        test_feats: ``[M, D]`` features to classify.
        num_classes: number of classes.
        k: neighbours that vote (at most N are used).
        temperature: :math:`\\tau` of the vote weights.

    Returns:
        ``[M]`` int64 predicted classes.

    Raises:
        ValueError: on mismatched shapes, ``k < 1`` or ``temperature <= 0``.

    Reference:
        Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
        Discrimination", CVPR 2018; lightly ``lightly.utils.benchmarking.knn_predict``.

    Examples:
        >>> train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> knn_predict(train, torch.tensor([0, 0, 1]), torch.tensor([[0.1, 1.0]]),
        ...             num_classes=2, k=1)
        tensor([1])
    """
    if train_feats.ndim != 2 or test_feats.ndim != 2 or train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(
            "train_feats and test_feats must be [N, D] and [M, D] with the same D, got "
            f"{tuple(train_feats.shape)} and {tuple(test_feats.shape)}"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    train = F.normalize(train_feats.float(), dim=1)
    test = F.normalize(test_feats.float(), dim=1)
    similarity = test @ train.T
    top, neighbours = similarity.topk(min(k, train.shape[0]), dim=1)
    votes = torch.zeros(test.shape[0], num_classes, dtype=torch.float32, device=test.device)
    # Subtracting each row's best similarity leaves the argmax unchanged and keeps exp finite.
    weights = ((top - top[:, :1]) / temperature).exp()
    votes.scatter_add_(1, train_labels.to(test.device)[neighbours].long(), weights)
    return votes.argmax(dim=1)


def knn_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.1,
    *,
    num_classes: int | None = None,
) -> dict[str, float]:
    """Accuracy and macro-F1 of the kNN classifier of :func:`knn_predict` on a test split.

    Args:
        train_feats: ``[N, D]`` features of the labelled probe-train split.
        train_labels: ``[N]`` their classes.
        test_feats: ``[M, D]`` features of the probe-test split.
        test_labels: ``[M]`` their classes.
        k: neighbours that vote.
        temperature: temperature of the vote weights.
        num_classes: number of classes (default: one more than the largest label seen).

    Returns:
        ``{"accuracy": ..., "macro_f1": ...}``.

    Raises:
        ValueError: on mismatched shapes or invalid ``k`` / ``temperature``.

    Examples:
        >>> feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> knn_probe(feats, torch.tensor([0, 1]), feats, torch.tensor([0, 1]), k=1)
        {'accuracy': 1.0, 'macro_f1': 1.0}
    """
    _check_split(train_feats, train_labels, "train")
    _check_split(test_feats, test_labels, "test")
    classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    predicted = knn_predict(
        train_feats, train_labels, test_feats, num_classes=classes, k=k, temperature=temperature
    )
    return scores(predicted, test_labels, classes)


def linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    C: float = 1.0,
    max_iter: int = 2000,
    num_classes: int | None = None,
) -> dict[str, float]:
    """Accuracy and macro-F1 of logistic regression fitted on standardised train features.

    The features are standardised with the training split's mean and deviation, then a
    multinomial logistic regression (L2 penalty ``1 / C``, class weights
    :math:`N / (K\\,N_c)`) is fitted with L-BFGS (scikit-learn) and applied to the test
    features.

    Args:
        train_feats: ``[N, D]`` features of the labelled probe-train split.
        train_labels: ``[N]`` their classes.
        test_feats: ``[M, D]`` features of the probe-test split.
        test_labels: ``[M]`` their classes.
        C: inverse L2 penalty.
        max_iter: L-BFGS iterations.
        num_classes: number of classes (default: one more than the largest label seen).

    Returns:
        ``{"accuracy": ..., "macro_f1": ...}``.

    Raises:
        ValueError: on mismatched shapes, ``C <= 0`` or a single class in the train split.

    Examples:
        >>> feats = torch.tensor([[0.0], [0.2], [1.0], [1.2]])
        >>> linear_probe(feats, torch.tensor([0, 0, 1, 1]), feats, torch.tensor([0, 0, 1, 1]))
        {'accuracy': 1.0, 'macro_f1': 1.0}
    """
    _check_split(train_feats, train_labels, "train")
    _check_split(test_feats, test_labels, "test")
    if C <= 0:
        raise ValueError(f"C must be > 0, got {C}")
    if torch.unique(train_labels).numel() < 2:
        raise ValueError("train_labels must hold at least two classes for a linear probe")
    classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    scaler = StandardScaler().fit(train_feats.double().cpu().numpy())
    model = LogisticRegression(C=C, max_iter=max_iter, class_weight="balanced")
    model.fit(scaler.transform(train_feats.double().cpu().numpy()), train_labels.cpu().numpy())
    predicted = model.predict(scaler.transform(test_feats.double().cpu().numpy()))
    return scores(torch.from_numpy(np.asarray(predicted)), test_labels, classes)


@torch.no_grad()
def embed(
    backbone: nn.Module, images: torch.Tensor | Iterable[torch.Tensor], *, batch_size: int = 256
) -> torch.Tensor:
    """Pooled features ``[N, D]`` of images ``[N, 1, S, S]`` (or batches of them), frozen.

    The backbone runs in evaluation mode (batch-norm running statistics) without
    gradients; its training mode is restored afterwards.
    """
    batches = torch.split(images, batch_size) if isinstance(images, torch.Tensor) else images
    was_training = backbone.training
    backbone.eval()
    try:
        device = next(backbone.parameters()).device
        return torch.cat([backbone(batch.to(device)).float().cpu() for batch in batches])
    finally:
        backbone.train(was_training)


def pixel_features(images: torch.Tensor, resolution: int = 8) -> torch.Tensor:
    """The raw-pixel baseline: images ``[N, 1, S, S]`` area-averaged to ``resolution`` a side.

    Returns:
        ``[N, resolution ** 2]`` float32.

    Raises:
        ValueError: when ``images`` is not ``[N, C, S, S]`` or ``resolution`` exceeds S.

    Examples:
        >>> pixel_features(torch.ones(2, 1, 32, 32), 4).shape
        torch.Size([2, 16])
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, S, S], got shape {tuple(images.shape)}")
    if not 1 <= resolution <= min(images.shape[-2:]):
        raise ValueError(f"resolution must lie in [1, {min(images.shape[-2:])}], got {resolution}")
    return F.adaptive_avg_pool2d(images.float(), resolution).flatten(1)


def probe_features(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.1,
    linear: bool = True,
) -> dict[str, float]:
    """Both probes on the same features: ``knn_macro_f1``, ``knn_accuracy`` and, with
    ``linear``, ``linear_macro_f1``, ``linear_accuracy``.

    Raises:
        ValueError: as :func:`knn_probe` and :func:`linear_probe`.

    Examples:
        >>> feats = torch.tensor([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.0, 0.1]])
        >>> labels = torch.tensor([0, 0, 1, 1])
        >>> probe_features(feats, labels, feats, labels, num_classes=2, k=1)["knn_accuracy"]
        1.0
    """
    knn = knn_probe(
        train_feats, train_labels, test_feats, test_labels, k, temperature, num_classes=num_classes
    )
    result = {f"knn_{name}": value for name, value in knn.items()}
    if linear:
        fitted = linear_probe(
            train_feats, train_labels, test_feats, test_labels, num_classes=num_classes
        )
        result.update({f"linear_{name}": value for name, value in fitted.items()})
    return result


def probe_backbone(
    backbone: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.1,
    linear: bool = True,
    batch_size: int = 256,
) -> dict[str, float]:
    """:func:`probe_features` on the frozen pooled features (:func:`embed`) of two image
    splits ``[N, 1, S, S]`` and ``[M, 1, S, S]``: what a pre-training monitor logs per epoch.

    Raises:
        ValueError: as :func:`probe_features`.
    """
    return probe_features(
        embed(backbone, train_images, batch_size=batch_size),
        train_labels,
        embed(backbone, test_images, batch_size=batch_size),
        test_labels,
        num_classes=num_classes,
        k=k,
        temperature=temperature,
        linear=linear,
    )
