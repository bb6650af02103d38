"""Watch the loss landscape during pretraining.

``LandscapeMonitor`` (a Lightning callback) every ``every_n_epochs`` measures the Hessian of
the method's own objective on fixed batches of the train split (fixed images, fixed
augmentation draws): its top eigenvalue and Hutchinson trace, logged as ``val/hessian_top``
and ``val/hessian_trace`` (standard error over probes ``val/hessian_trace_stderr`` and, with
several batches, over batches ``val/hessian_trace_batch_stderr``); beside them the norm of the
measured weights, ``val/weight_norm``, and, with ``adaptive``, the top eigenvalue and trace of
the adaptive Hessian ``T H T``, ``T = diag(|w|)`` (Kwon et al. 2021), which BatchNorm's
rescaling of the weight feeding it cannot change (``val/adaptive_hessian_top``,
``val/adaptive_hessian_trace``): with weight decay shrinking BN-fed weights, H's eigenvalues
grow as ``1 / ||w||^2`` on a flat loss, so a trend in H alone may only track the weight norm.
A measurement where a measured BatchNorm has gamma exactly 0 (timm's zero-initialised residual
BatchNorms, at the start) warns: the loss is not twice differentiable there.
With ``fisher``, the true Fisher of the method's own softmax
(``step_logits``: MoCo v2's InfoNCE logits, SwAV's prototype scores; top eigenvalue and trace,
``val/fisher_top`` and ``val/fisher_trace``, on the same batches and draws) and the top
eigenvalue of the second moment of ``fisher_batches`` mini-batch gradients
(``val/gradient_noise_top``, formerly ``val/gradient_moment_top``: between tr/B and tr of B
gradients, a squared gradient norm rather than a Fisher eigenvalue).
The numbers go to ``landscape.json`` in the log folder at the end of fit.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn

from sslkit.data.contract import data_contract

from .geometry import due
from sslkit.nn import distributed

from .landscape import (adaptive_hessian_trace, adaptive_top_eigenvalues, fisher_spectrum, gradient_noise_top,
                        hessian_trace, top_eigenvalues)
from .objectives import (method_closures, method_logit_closures, not_twice_differentiable_warning, preserved,
                         trained_blocks, weight_norm, zero_gamma_batchnorms)


def rank_share(items: Iterable, count: int, rank: int, world: int) -> list:
    """This rank's share of the first ``count * world`` items: items ``rank, rank + world, ...``,
    so ranks take disjoint items, and the same number of them, ``min(count, available // world)``
    (every rank reads the same items in the same order, so all agree on it: a product averaged
    over ranks needs as many closures on each)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    first = []
    for item in items:
        first.append(item)
        if len(first) == count * world:
            break
    return first[rank::world][:len(first) // world]


def rebatched(batches: Iterable[dict], size: int) -> Iterable[dict]:
    """The same items in the same order, in batches of ``size`` (each batch's whole pieces;
    a trailing piece smaller than ``size`` is dropped): every value with one entry per item (a
    tensor's first dimension, a list) is cut, anything else is shared. Lets a run with a
    larger training batch be measured on the batches of a smaller one."""
    for batch in batches:
        items = len(batch["image"])
        if size > items:
            raise ValueError(f"LandscapeMonitor batch_size {size} is larger than the data module's batch of "
                             f"{items}: set batch_size to at most {items}, or leave it unset")
        for start in range(0, items - size + 1, size):
            yield {key: value[start:start + size] if hasattr(value, "__len__") and not isinstance(value, str)
                   and len(value) == items else value for key, value in batch.items()}


class LandscapeMonitor(pl.Callback):
    """Args: ``every_n_epochs``; ``batches`` fixed batches of the train split, of the data
    module's batch size or of ``batch_size`` (the loader's batches cut in order: a run at 4x the
    batch measured on the same images as the 1x run); ``trace_samples`` Hutchinson probes; ``tol`` of the top eigenvalue;
    ``fisher``: also the true Fisher of the method's softmax (where it has ``step_logits``; the
    same probes as the trace) and the gradient noise over ``fisher_batches`` batches; ``at_start``: also
    measure before the first step (the initialisation, epoch 0: timm's zero-gamma residual
    BatchNorms make it a point where the loss is not twice differentiable, which warns);
    ``adaptive``: also the adaptive Hessian (``val/adaptive_hessian_top``/``_trace``); ``seed`` of
    the draws and probes. Under DDP each rank measures its own share of the train split's
    batches (``rank_share``: batches ``rank, rank + world, ...`` of the evaluation loader, which
    has no distributed sampler), ``batches`` per rank, and the products are averaged over ranks:
    the figures are those of ``batches x world`` batches, and every rank logs the same numbers."""

    def __init__(self, every_n_epochs: int = 5, batches: int = 1, trace_samples: int = 20, tol: float = 1e-2,
                 fisher: bool = False, fisher_batches: int = 8, at_start: bool = False, seed: int = 0,
                 adaptive: bool = True, batch_size: int | None = None) -> None:
        if every_n_epochs < 1 or batches < 1 or (batch_size is not None and batch_size < 1):
            raise ValueError("every_n_epochs, batches and batch_size must be at least 1")
        self.every_n_epochs, self.batches, self.trace_samples, self.tol = every_n_epochs, batches, trace_samples, tol
        self.fisher, self.fisher_batches, self.at_start, self.seed = fisher, fisher_batches, at_start, seed
        self.adaptive, self.batch_size = adaptive, batch_size
        self.history: list[dict] = []
        self.nondifferentiable_at: list[str] = []

    def _batches(self, data, module: pl.LightningModule, count: int, rank: int | None = None,
                 world: int | None = None) -> list[dict]:
        """This rank's ``count`` fixed batches of the train split (``rank_share``), prepared."""
        rank = distributed.rank() if rank is None else rank
        world = distributed.world_size() if world is None else world
        prepared = (data.prepare(batch, module.device) for batch in data.eval_loader(data.eval_split("train")))
        prepared = (batch for batch in prepared if "image" in batch)
        if self.batch_size is not None:
            prepared = rebatched(prepared, self.batch_size)
        out = rank_share(prepared, count, rank, world)
        if not out:
            raise ValueError(f"the train split has fewer batches than the {world} ranks measuring it")
        return out

    def measure(self, trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, float]:
        with preserved(module):
            return self._measure(trainer, module)

    def _measure(self, trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, float]:
        data = data_contract(trainer.datamodule)
        blocks = trained_blocks(module)
        params = [p for group in blocks.values() for p in group]
        self.nondifferentiable_at = zero_gamma_batchnorms(module, params)
        if self.nondifferentiable_at:
            rank_zero_warn(f"LandscapeMonitor at step {trainer.global_step}: "
                           + not_twice_differentiable_warning(self.nondifferentiable_at))
        closures = method_closures(module, self._batches(data, module, self.batches), self.seed)
        top = top_eigenvalues(closures, params, k=1, tol=self.tol, model=module, seed=self.seed)
        trace = hessian_trace(closures, params, samples=self.trace_samples, model=module, seed=self.seed)
        values = {"val/hessian_top": float(top.eigenvalues[0]), "val/hessian_trace": trace.estimate,
                  "val/hessian_trace_stderr": trace.stderr, "val/weight_norm": weight_norm(params)}
        if trace.batch_stderr is not None:
            values["val/hessian_trace_batch_stderr"] = trace.batch_stderr
        if self.adaptive:
            adaptive_top = adaptive_top_eigenvalues(closures, params, k=1, tol=self.tol, model=module, seed=self.seed)
            adaptive_trace = adaptive_hessian_trace(closures, params, samples=self.trace_samples, model=module,
                                                    seed=self.seed)
            values.update({"val/adaptive_hessian_top": float(adaptive_top.eigenvalues[0]),
                           "val/adaptive_hessian_trace": adaptive_trace.estimate,
                           "val/adaptive_hessian_trace_stderr": adaptive_trace.stderr})
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
            self.history.append({"epoch": 0, "step": 0, **self.measure(trainer, module), **self._kinks()})

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not due(trainer, self.every_n_epochs):
            return
        epoch = trainer.current_epoch
        values = self.measure(trainer, module)
        module.log_dict(values, rank_zero_only=True)
        self.history.append({"epoch": epoch + 1, "step": trainer.global_step, **values, **self._kinks()})

    def _kinks(self) -> dict:
        """For the history (landscape.json): the zero-gamma BatchNorms of the last measurement."""
        return {"nondifferentiable_at": list(self.nondifferentiable_at)} if self.nondifferentiable_at else {}

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        log_dir = trainer.log_dir
        if self.history and log_dir and trainer.is_global_zero:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            (Path(log_dir) / "landscape.json").write_text(json.dumps(self.history, indent=2))

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
