"""Linear classifiers on frozen features: the fast path of the linear probe.

Full-batch L-BFGS multinomial logistic regression with an L2 penalty on the weights
(not the bias), as in CLIP's linear probes: ``mean CE + (l2 / 2) ||W||^2``, the objective
of scikit-learn's ``LogisticRegression(C = 1 / (l2 N))``. Features are standardised with
the training statistics. The L2 strength is chosen on a held-out part of the training
split, then the classifier is refit on the whole split.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class LinearClassifier:
    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.to(self.weight) - self.mean) / self.std
        return x @ self.weight.T + self.bias


def minimize_logistic_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    l2: float,
    weight: torch.Tensor,
    bias: torch.Tensor,
    max_iter: int = 500,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, b)`` minimising ``mean CE(x W^T + b, y) + (l2 / 2) ||W||^2`` by full-batch L-BFGS
    with a strong-Wolfe line search, started from ``(weight, bias)`` (zeros for a fresh fit,
    the last solution for a warm start). Runs with autograd on whatever mode the caller is in
    (inference tensors are copied first); returns new tensors, leaving the inputs as they were."""
    with torch.inference_mode(False), torch.enable_grad():
        x, y = (t.clone() if t.is_inference() else t for t in (x, y))
        weight = weight.detach().clone().float().requires_grad_(True)
        bias = bias.detach().clone().float().requires_grad_(True)
        optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                      tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(x @ weight.T + bias, y) + 0.5 * l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
    return weight.detach(), bias.detach()


def fit_logistic_regression(
    features: torch.Tensor,
    labels: torch.Tensor,
    l2: float,
    num_classes: int | None = None,
    max_iter: int = 500,
    device: str | torch.device = "cpu",
    standardize: bool = True,
) -> LinearClassifier:
    """Minimise ``mean CE + (l2 / 2) ||W||^2`` over (W, b) by full-batch L-BFGS."""
    device = torch.device(device)
    x = features.to(device, torch.float32)
    y = labels.to(device)
    num_classes = num_classes or int(y.max()) + 1
    mean = x.mean(0) if standardize else torch.zeros(x.shape[1], device=device)
    std = x.std(0).clamp_min(1e-6) if standardize else torch.ones(x.shape[1], device=device)
    x = (x - mean) / std
    weight, bias = minimize_logistic_loss(x, y, l2, torch.zeros(num_classes, x.shape[1], device=device),
                                          torch.zeros(num_classes, device=device), max_iter)
    return LinearClassifier(weight, bias, mean, std)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    hits = (logits.topk(k, dim=1).indices == labels.to(logits.device).view(-1, 1)).any(1)
    return float(hits.float().mean())


@dataclass
class ProbeResult:
    top1: float
    top5: float
    l2: float
    sweep: dict[float, float] = field(default_factory=dict)
    train_top1: float | None = None

    @property
    def gap(self) -> float | None:
        """The probe's generalisation gap, train top-1 - test top-1: with the test accuracy, the
        decodable-information view of a representation (Dubois et al. 2020, "Learning Optimal
        Representations with the Decodable Information Bottleneck"): a good representation lets
        the probe reach high test accuracy with a small gap, one that only memorises does not."""
        return None if self.train_top1 is None else self.train_top1 - self.top1

    def to_dict(self) -> dict:
        out = {"top1": self.top1, "top5": self.top5, "l2": self.l2,
               "sweep_val_top1": {str(k): v for k, v in self.sweep.items()}}
        if self.train_top1 is not None:
            out.update(train_top1=self.train_top1, gap=self.gap)
        return out


def linear_probe(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    l2_grid: Sequence[float] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
    val_fraction: float = 0.2,
    max_iter: int = 500,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> ProbeResult:
    """Sweep ``l2_grid`` on a held-out ``val_fraction`` of ``train``, refit on all of it
    with the best value, and report top-1/top-5 on ``test``, the refitted classifier's top-1 on
    ``train`` itself and the gap between the two (``ProbeResult.gap``)."""
    x, y = train
    if len(x) != len(y):
        raise ValueError(f"{len(x)} training features but {len(y)} labels")
    num_classes = int(max(y.max(), test[1].max())) + 1
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=generator)
    held = max(1, int(round(val_fraction * len(x))))
    val_idx, fit_idx = order[:held], order[held:]
    sweep = {}
    for l2 in l2_grid:
        classifier = fit_logistic_regression(x[fit_idx], y[fit_idx], l2, num_classes, max_iter, device)
        sweep[l2] = topk_accuracy(classifier.logits(x[val_idx].to(device)), y[val_idx], 1)
    best = max(sweep, key=lambda l2: (sweep[l2], l2))
    classifier = fit_logistic_regression(x, y, best, num_classes, max_iter, device)
    logits = classifier.logits(test[0].to(device))
    train_top1 = topk_accuracy(classifier.logits(x.to(device)), y, 1)
    return ProbeResult(topk_accuracy(logits, test[1], 1), topk_accuracy(logits, test[1], 5), best, sweep, train_top1)
