"""Watch the loss landscape during pretraining.

``LandscapeMonitor`` (a Lightning callback) every ``every_n_epochs`` measures the Hessian of
the method's own objective on fixed batches of the train split (fixed images, fixed
augmentation draws): its top eigenvalue and Hutchinson trace, logged as ``val/hessian_top``
and ``val/hessian_trace``, and, with ``fisher``, the true Fisher of the method's own softmax
(``step_logits``: MoCo v2's InfoNCE logits, SwAV's prototype scores; top eigenvalue and trace,
``val/fisher_top`` and ``val/fisher_trace``, on the same batches and draws) and the top
eigenvalue of the second moment of ``fisher_batches`` mini-batch gradients
(``val/gradient_noise_top``, formerly ``val/gradient_moment_top``: between tr/B and tr of B
gradients, a squared gradient norm rather than a Fisher eigenvalue).
The numbers go to ``landscape.json`` in the log folder at the end of fit.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl

from sslkit.data.contract import data_contract

from .geometry import due
from .landscape import fisher_spectrum, gradient_noise_top, hessian_trace, top_eigenvalues
from .objectives import method_closures, method_logit_closures, preserved, trained_blocks


class LandscapeMonitor(pl.Callback):
    """Args: ``every_n_epochs``; ``batches`` fixed batches of the train split (the data
    module's batch size); ``trace_samples`` Hutchinson probes; ``tol`` of the top eigenvalue;
    ``fisher``: also the true Fisher of the method's softmax (where it has ``step_logits``; the
    same probes as the trace) and the gradient noise over ``fisher_batches`` batches; ``at_start``: also
    measure before the first step (the initialisation, epoch 0); ``seed`` of the draws and probes. Under DDP every rank measures its own batches and the products are
    averaged over ranks, so every rank logs the same numbers."""

    def __init__(self, every_n_epochs: int = 5, batches: int = 1, trace_samples: int = 20, tol: float = 1e-2,
                 fisher: bool = False, fisher_batches: int = 8, at_start: bool = False, seed: int = 0) -> None:
        if every_n_epochs < 1 or batches < 1:
            raise ValueError("every_n_epochs and batches must be at least 1")
        self.every_n_epochs, self.batches, self.trace_samples, self.tol = every_n_epochs, batches, trace_samples, tol
        self.fisher, self.fisher_batches, self.at_start, self.seed = fisher, fisher_batches, at_start, seed
        self.history: list[dict] = []

    def _batches(self, data, module: pl.LightningModule, count: int) -> list[dict]:
        out = []
        for batch in data.eval_loader(data.eval_split("train")):
            batch = data.prepare(batch, module.device)
            if "image" in batch:
                out.append(batch)
            if len(out) == count:
                break
        return out

    def measure(self, trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, float]:
        with preserved(module):
            return self._measure(trainer, module)

    def _measure(self, trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, float]:
        data = data_contract(trainer.datamodule)
        blocks = trained_blocks(module)
        params = [p for group in blocks.values() for p in group]
        closures = method_closures(module, self._batches(data, module, self.batches), self.seed)
        top = top_eigenvalues(closures, params, k=1, tol=self.tol, model=module, seed=self.seed)
        trace = hessian_trace(closures, params, samples=self.trace_samples, model=module, seed=self.seed)
        values = {"val/hessian_top": float(top.eigenvalues[0]), "val/hessian_trace": trace.estimate,
                  "val/hessian_trace_stderr": trace.stderr}
        if self.fisher:
            if callable(getattr(module, "step_logits", None)):
                logits = method_logit_closures(module, self._batches(data, module, self.batches), self.seed)
                fisher = fisher_spectrum(logits, params, tol=self.tol, trace_samples=max(2, self.trace_samples),
                                         density_probes=0, model=module, seed=self.seed)
                values.update({"val/fisher_top": float(fisher.top.eigenvalues[0]),
                               "val/fisher_trace": fisher.trace.estimate,
                               "val/fisher_trace_stderr": fisher.trace.stderr})
            many = method_closures(module, self._batches(data, module, self.fisher_batches), self.seed)
            values["val/gradient_noise_top"] = float(gradient_noise_top(many, params, model=module).eigenvalues[0])
        return values

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.at_start and trainer.global_step == 0 and not self.history:
            self.history.append({"epoch": 0, "step": 0, **self.measure(trainer, module)})

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not due(trainer, self.every_n_epochs):
            return
        epoch = trainer.current_epoch
        values = self.measure(trainer, module)
        module.log_dict(values, rank_zero_only=True)
        self.history.append({"epoch": epoch + 1, "step": trainer.global_step, **values})

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        log_dir = trainer.log_dir
        if self.history and log_dir and trainer.is_global_zero:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            (Path(log_dir) / "landscape.json").write_text(json.dumps(self.history, indent=2))

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
