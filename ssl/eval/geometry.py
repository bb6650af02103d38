"""Watch representation geometry evolve during pretraining.

``GeometryMonitor`` (a Lightning callback) every ``every_n_epochs`` encodes a fixed subset
of the val split (and of the train split as the kNN bank), and logs ``val/alpha`` and
``val/effective_rank`` of the backbone features and ``val/knn_top1_subset`` on that
subset. At the end of fit it plots alpha, effective rank and kNN accuracy (the subset's,
and the method's own ``val/knn_top1`` where it logs one) against the epoch, to
``<log_dir>/geometry.png``, with the numbers in ``geometry.json``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import Subset

from sslkit.data.contract import data_contract

from .features import extract_features
from .knn import knn_predict
from .plots import plot_geometry
from .spectrum import eigenspectrum


def due(trainer: pl.Trainer, every_n_epochs: int) -> bool:
    """Whether a monitor measures at the end of the current epoch: every ``every_n_epochs``
    epochs and at the last one."""
    epoch = trainer.current_epoch + 1
    return epoch % every_n_epochs == 0 or epoch == trainer.max_epochs


class GeometryMonitor(pl.Callback):
    def __init__(
        self,
        every_n_epochs: int = 5,
        num_samples: int = 2048,
        bank_size: int = 4096,
        knn_k: int = 20,
        knn_temperature: float = 0.1,
        fit_range: tuple[int, int] | None = None,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be at least 1, got {every_n_epochs}")
        self.every_n_epochs, self.num_samples, self.bank_size = every_n_epochs, num_samples, bank_size
        self.knn_k, self.knn_temperature, self.fit_range = knn_k, knn_temperature, fit_range
        self.history: list[dict] = []

    def _subset(self, dataset, size: int) -> Subset:
        step = max(1, len(dataset) // size)
        return Subset(dataset, list(range(0, len(dataset), step))[:size])

    def _features(self, data, split: str, size: int, module: pl.LightningModule) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone features of an evenly spaced subset of ``split``, read through the data
        module's evaluation loader (whole images, device decoding, unreadable images)."""
        loader = data.eval_loader(self._subset(data.eval_split(split), size))
        backbone = module.evaluated_backbone() if hasattr(module, "evaluated_backbone") else module.backbone
        return extract_features(backbone, loader, module.augment.evaluate, module.device, f"geometry {split}",
                                progress=False, prepare=data.prepare)

    @torch.no_grad()
    def measure(self, trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, float]:
        data = trainer.datamodule
        data = data_contract(data)
        queries, query_labels = self._features(data, "val", self.num_samples, module)
        bank, bank_labels = self._features(data, "train", self.bank_size, module)
        report = eigenspectrum(queries, self.fit_range)
        num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
        scores = knn_predict(queries, bank, bank_labels, num_classes, self.knn_k, self.knn_temperature)
        return {"val/alpha": report.alpha, "val/effective_rank": report.effective_rank,
                "val/knn_top1_subset": float((scores.argmax(1) == query_labels).float().mean()),
                "val/alpha_r2": report.r2}

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not due(trainer, self.every_n_epochs):
            return
        epoch = trainer.current_epoch
        values = self.measure(trainer, module)
        module.log_dict(values, rank_zero_only=True)
        knn = trainer.callback_metrics.get("val/knn_top1")
        self.history.append({"epoch": epoch + 1, **values, "val/knn_top1": None if knn is None else float(knn)})

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        if self.history and log_dir and trainer.is_global_zero:
            self._write(Path(log_dir))

    def _write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "geometry.json").write_text(json.dumps(self.history, indent=2))
        plot_geometry(self.history, out / "geometry.png")

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
