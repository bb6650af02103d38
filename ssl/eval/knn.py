"""Weighted kNN classification on L2-normalised features (Wu et al. 2018, sec. 3.4).

Each query votes with its ``k`` most cosine-similar bank features, neighbour ``i``
weighing ``exp(s_i / temperature)``; the class with the largest total weight wins.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchmetrics import Metric


@dataclass
class KNNConfig:
    """The ``val/knn_top1`` monitor every method logs: ``k`` neighbours (200 in Wu et al.
    2018; about 20 on small data) voting with weight ``exp(s / temperature)``."""

    k: int = 200
    temperature: float = 0.07


@torch.no_grad()
def knn_predict(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores ``[N, num_classes]`` for ``query`` ``[N, D]`` against ``bank`` ``[M, D]``."""
    query = F.normalize(query.float(), dim=1)
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    scores = []
    for start in range(0, query.shape[0], chunk_size):
        sim = query[start:start + chunk_size] @ bank.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, device=query.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        scores.append(votes)
    return torch.cat(scores)


class KNNAccuracy(Metric):
    """Top-1 weighted-kNN accuracy; bank and query features are gathered across ranks.

    Call ``update(features, labels, bank=True)`` for the bank split and ``bank=False``
    for the query split, then ``compute()``.
    """

    full_state_update = False

    def __init__(self, k: int = 200, temperature: float = 0.07) -> None:
        super().__init__()
        self.k = k
        self.temperature = temperature
        for name in ("bank_features", "bank_labels", "query_features", "query_labels"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, features: torch.Tensor, labels: torch.Tensor, bank: bool) -> None:
        if bank:
            self.bank_features.append(features.detach().float())
            self.bank_labels.append(labels.detach())
        else:
            self.query_features.append(features.detach().float())
            self.query_labels.append(labels.detach())

    def ready(self) -> bool:
        """Both the bank and the queries have features."""
        return len(self.bank_features) > 0 and len(self.query_features) > 0

    def compute(self) -> torch.Tensor:
        def cat(x):
            return torch.cat(x) if isinstance(x, list) else x

        bank, bank_labels = cat(self.bank_features), cat(self.bank_labels)
        query, query_labels = cat(self.query_features), cat(self.query_labels)
        if len(bank) == 0 or len(query) == 0:
            raise RuntimeError("kNN needs both bank and query features; got an empty split")
        num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
        scores = knn_predict(query, bank, bank_labels, num_classes, self.k, self.temperature)
        return (scores.argmax(dim=1) == query_labels).float().mean()
