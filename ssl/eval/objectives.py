"""A method's own training objective (or a linear probe's), as the closures the landscape
tools take, and the blocks of its trained networks.

``method_closures``: one closure per batch, each the method's ``step`` loss on views drawn
with that batch's fixed seed (so every Hessian-vector product sees the same function), with
BatchNorm in train mode as in training. Everything but the trained networks stays as the
checkpoint has it: the momentum encoders and the prototypes are not among the parameters,
and the queue, like every buffer, is put back before each pass (``sslkit.eval.landscape``
restores the module's buffers). ``measure_landscape`` takes the top eigenvalues, the trace,
the spectral density and, per block, trace and top eigenvalue, and leaves every parameter
and buffer of the method as it found them (``preserved``). Beside every Hessian figure it
records the weight norms (overall and per block) and the adaptive Hessian ``T H T``, ``T =
diag(|w|)`` (Kwon et al. 2021), which BatchNorm's rescaling of a weight cannot change: with
weight decay shrinking BN-fed weights, H's eigenvalues grow as ``1 / ||w||^2`` on a flat loss,
so a curvature trend is read against both. It flags a point where the loss is not twice
differentiable (``zero_gamma_batchnorms``).

What the Hessian covers. It is taken with respect to the trained networks of ``trained_blocks``
(backbone, projector, predictor) only. For SwAV that leaves out the prototypes, and the codes
(Sinkhorn-Knopp assignments, computed under ``torch.no_grad`` as in the official
``main_swav.py``) are constants of each product: the Hessian is that of the swapped-prediction
loss with prototypes and codes held at their values, part of the objective, not the curvature
of the whole training dynamics (whose codes move with the weights).

``method_logit_closures``: the same batches, views and buffers, each closure returning the
logits of the method's own softmax (``step_logits``: MoCo v2, SwAV), whose true Fisher
``measure_fisher`` takes; ``probe_per_example``: a probe's loss, separable over examples, for
the empirical Fisher.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .hvp import PerExample
from .landscape import (adaptive_hessian_trace, adaptive_top_eigenvalues, empirical_fisher_spectrum,
                        fisher_spectrum, hessian_trace, spectral_density, top_eigenvalues)

CONTAINERS = ("stages", "blocks", "layers", "features")  # timm and torchvision modules holding the stages


def _trainable(module: nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.requires_grad]


def backbone_blocks(backbone: nn.Module) -> dict[str, list[torch.Tensor]]:
    """The backbone's trainable parameters by block: ``stem`` (everything before the first
    stage), each stage (ResNets' ``layer1``..., or ``stages.0``... of a stage container) and
    ``head`` (everything after)."""
    model = getattr(backbone, "model", backbone)
    blocks: dict[str, list[torch.Tensor]] = {}
    stages_seen = False
    for name, child in model.named_children():
        if not _trainable(child):
            continue
        if name in CONTAINERS:
            for index, part in child.named_children():
                blocks[f"{name}.{index}"] = _trainable(part)
            stages_seen = True
        elif name.startswith(("layer", "stage")):
            blocks[name] = _trainable(child)
            stages_seen = True
        else:
            blocks.setdefault("head" if stages_seen else "stem", []).extend(_trainable(child))
    return {k: v for k, v in blocks.items() if v}


def trained_blocks(method: nn.Module) -> dict[str, list[torch.Tensor]]:
    """The networks a method trains, by block: the backbone's blocks, then ``projector`` and
    ``predictor`` where the method has them. Momentum copies, prototypes (SwAV's, trained but
    not measured here) and the online classifier are left out (held fixed)."""
    blocks = {f"backbone.{k}": v for k, v in backbone_blocks(method.backbone).items()}
    for name in ("projector", "predictor"):
        module = getattr(method, name, None)
        if isinstance(module, nn.Module):
            params = [p for p in module.parameters() if p.requires_grad]
            if params:
                blocks[name] = params
    return blocks


def method_closures(method: nn.Module, batches: Sequence[dict], seed: int = 0) -> list[Callable[[], torch.Tensor]]:
    """One closure per batch: ``method.step`` on views of the batch drawn from the generator
    seeded with ``(seed, batch)``, with every buffer (the queue, BatchNorm statistics) as it is
    now: what the step enqueues never reaches the next batch's loss. Batches are prepared (on
    the method's device, decoded)."""
    return _closures(method, batches, seed, lambda views, batch: method.step(views, labels=batch.get("label"))[0])


def method_logit_closures(method: nn.Module, batches: Sequence[dict], seed: int = 0
                          ) -> list[Callable[[], torch.Tensor]]:
    """One closure per batch returning the logits ``[rows, classes]`` of the method's own softmax
    loss (``method.step_logits``: MoCo v2's 1 + K InfoNCE logits, positive first; SwAV's prototype
    scores over the temperature), on the same views, buffers and seeds as ``method_closures``:
    the closures of ``sslkit.eval.landscape.fisher_spectrum``, the true Fisher of that softmax."""
    if not callable(getattr(method, "step_logits", None)):
        raise TypeError(f"{type(method).__name__} has no step_logits: its loss is no softmax over classes "
                        f"(MoCo v2 and SwAV have one), so it has no true Fisher here")
    return _closures(method, batches, seed, lambda views, batch: method.step_logits(views))


def _closures(method: nn.Module, batches: Sequence[dict], seed: int, call: Callable
              ) -> list[Callable[[], torch.Tensor]]:
    buffers = [(b, b.detach().clone()) for b in method.buffers()]

    def closure_for(index: int, batch: dict) -> Callable[[], torch.Tensor]:
        def closure() -> torch.Tensor:
            with torch.no_grad():  # (under torch.func a copy into a captured buffer is refused; the engine's
                for buffer, saved in buffers:  # Isolation has restored them by then, so none is made)
                    if not torch.equal(buffer, saved):
                        buffer.copy_(saved)
            torch.manual_seed(seed * 1_000_003 + index)
            with torch.no_grad():
                views = method.augment(batch)
            method.measuring = True  # what the method accumulates for its own logs stays out of it
            try:
                return call(views, batch)
            finally:
                method.measuring = False
        return closure

    return [closure_for(i, batch) for i, batch in enumerate(batches)]


def probe_closures(backbone: nn.Module, head: nn.Module, batches: Sequence[torch.Tensor],
                   labels: Sequence[torch.Tensor]) -> list[Callable[[], torch.Tensor]]:
    """One closure per batch: the cross-entropy of a fixed linear ``head`` on the backbone's
    features of the (already viewed) images."""
    return [lambda x=x, y=y: F.cross_entropy(head(backbone(x)), y) for x, y in zip(batches, labels)]


def probe_per_example(backbone: nn.Module, head: nn.Module, batches: Sequence[torch.Tensor],
                      labels: Sequence[torch.Tensor]) -> list[PerExample]:
    """``probe_closures`` as losses separable over examples (for the empirical Fisher): each
    image's cross-entropy is its own when the backbone normalises with fixed statistics (eval
    mode, as ``sslkit landscape --loss probe`` runs it)."""
    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(backbone(x)), y)

    return [PerExample(loss, x, y) for x, y in zip(batches, labels)]


def measure_fisher(logit_closures: Sequence[Callable], params: Sequence[torch.Tensor], model: nn.Module,
                   top_k: int = 3, trace_samples: int = 30, density_probes: int = 4, lanczos_steps: int = 30,
                   tol: float = 1e-3, seed: int = 0, per_example: Sequence[PerExample] | None = None) -> dict:
    """The true Fisher of the softmax the closures' logits define (top-``top_k`` eigenvalues,
    Hutchinson trace, density) and, given ``per_example`` losses, the empirical Fisher of their
    per-example gradients (top eigenvalues, exact trace, density), as plain data. Leaves every
    parameter and buffer as it found them."""
    with preserved(model):
        record = {"fisher": fisher_spectrum(logit_closures, params, top_k, tol=tol, trace_samples=trace_samples,
                                            density_probes=density_probes, lanczos_steps=lanczos_steps,
                                            model=model, seed=seed).record()}
        if per_example is not None:
            record["empirical_fisher"] = empirical_fisher_spectrum(
                per_example, params, top_k, tol=tol, density_probes=density_probes, lanczos_steps=lanczos_steps,
                model=model, seed=seed).record()
    return record


@contextmanager
def preserved(module: nn.Module) -> Iterator[None]:
    """Every parameter and buffer of ``module`` as it was on entry, on exit: what a method's
    step changes besides the parameters measured (SwAV renormalises its prototypes, MoCo fills
    its queue) is put back."""
    saved = {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()}
    try:
        yield
    finally:
        with torch.no_grad():
            for key, value in module.state_dict(keep_vars=True).items():
                value.copy_(saved[key])


def weight_norm(params: Sequence[torch.Tensor]) -> float:
    """``||w||``, the L2 norm of the parameters concatenated."""
    return math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in params))


def zero_gamma_batchnorms(module: nn.Module, params: Sequence[torch.Tensor] | None = None) -> list[str]:
    """The BatchNorms of ``module`` whose scale (gamma, ``weight``) is exactly zero in every entry,
    as timm zero-initialises the last BatchNorm of each residual block: among ``params`` when
    given (the ones measured), else all. At such a point the loss is not twice differentiable:
    the block's branch adds exactly zero, so the ReLU after the residual sum sees the shortcut's
    exact zeros (itself a ReLU's output) at its kink, and any move of gamma pushes them to one
    side or the other: the gradient jumps across gamma = 0 and a Hessian there is one-sided.
    Measure after the first optimiser step instead."""
    measured = None if params is None else {id(p) for p in params}
    names = []
    for name, child in module.named_modules():
        weight = getattr(child, "weight", None)
        if (isinstance(child, nn.modules.batchnorm._BatchNorm) and isinstance(weight, torch.Tensor)
                and (measured is None or id(weight) in measured) and not bool(weight.detach().any())):
            names.append(name)
    return names


def not_twice_differentiable_warning(names: Sequence[str]) -> str:
    """The warning for a point with zero-gamma BatchNorms ``names`` (``zero_gamma_batchnorms``)."""
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return (f"the loss is not twice differentiable here: BatchNorm(s) {shown} have gamma exactly 0 (timm's "
            f"zero-initialised residual BatchNorms), so the gradient jumps across gamma = 0 and the Hessian "
            f"figures are one-sided artefacts of the initialisation; measure after the first optimiser step")


def measure_landscape(closures: Sequence[Callable], blocks: dict[str, list[torch.Tensor]], model: nn.Module,
                      top_k: int = 3, trace_samples: int = 30, density_probes: int = 4, lanczos_steps: int = 30,
                      tol: float = 1e-3, by_block: bool = True, seed: int = 0, adaptive: bool = True) -> dict:
    """Top-``top_k`` eigenvalues (and the most negative one), Hutchinson trace with its
    standard error over probes and, with several batches, over batches, the spectral density
    and, with ``by_block``, each block's trace and top eigenvalue (the Hessian restricted to
    that block's parameters), as plain data. Every Lanczos result carries ``converged`` and its
    residuals. Beside them: the weight norms (``weight_norm`` of all measured parameters,
    ``weight_norms`` and each block's ``weight_norm``), and with ``adaptive`` the top eigenvalues
    and trace of the adaptive Hessian ``T H T``, ``T = diag(|w|)`` (Kwon et al. 2021), which
    BatchNorm's rescaling of the weight feeding it cannot change. ``twice_differentiable`` is
    false, and ``nondifferentiable_at`` names the layers, where a measured BatchNorm has gamma
    exactly 0 (``zero_gamma_batchnorms``)."""
    with preserved(model):
        return _measure(closures, blocks, model, top_k, trace_samples, density_probes, lanczos_steps, tol, by_block,
                        seed, adaptive)


def _measure(closures, blocks, model, top_k, trace_samples, density_probes, lanczos_steps, tol, by_block,
             seed, adaptive) -> dict:
    params = [p for group in blocks.values() for p in group]
    kinks = zero_gamma_batchnorms(model, params)
    top = top_eigenvalues(closures, params, k=top_k, tol=tol, model=model, seed=seed)
    bottom = top_eigenvalues(closures, params, k=1, which="smallest", tol=max(tol, 1e-2), model=model, seed=seed)
    trace = hessian_trace(closures, params, samples=trace_samples, model=model, seed=seed)
    density = spectral_density(closures, params, num_probes=density_probes, lanczos_steps=lanczos_steps,
                               grid=200, model=model, seed=seed)
    record = {"parameters": sum(p.numel() for p in params), "batches": len(closures),
              "twice_differentiable": not kinks, "nondifferentiable_at": kinks,
              "weight_norm": weight_norm(params),
              "weight_norms": {name: weight_norm(group) for name, group in blocks.items()},
              "top_eigenvalues": top.eigenvalues.tolist(), "converged": top.converged,
              "top_residuals": top.residuals.tolist(),
              "most_negative_eigenvalue": float(bottom.eigenvalues[0]), "most_negative_converged": bottom.converged,
              "most_negative_residual": float(bottom.residuals[0]), **trace.record(),
              "density": {"grid": density.grid.tolist(), "density": density.density.tolist(), "sigma": density.sigma}}
    if adaptive:
        adaptive_top = adaptive_top_eigenvalues(closures, params, k=top_k, tol=tol, model=model, seed=seed)
        adaptive_trace = adaptive_hessian_trace(closures, params, samples=trace_samples, model=model, seed=seed)
        record.update({"adaptive_top_eigenvalues": adaptive_top.eigenvalues.tolist(),
                       "adaptive_converged": adaptive_top.converged,
                       "adaptive_top_residuals": adaptive_top.residuals.tolist(),
                       **adaptive_trace.record("adaptive_trace")})
    if by_block:
        record["by_block"] = {}
        for name, group in blocks.items():
            block_trace = hessian_trace(closures, group, samples=max(10, trace_samples // 3), model=model, seed=seed)
            block_top = top_eigenvalues(closures, group, k=1, tol=max(tol, 1e-2), model=model, seed=seed)
            record["by_block"][name] = {"parameters": sum(p.numel() for p in group),
                                        "weight_norm": record["weight_norms"][name],
                                        "top_eigenvalue": float(block_top.eigenvalues[0]),
                                        "converged": block_top.converged, "residual": float(block_top.residuals[0]),
                                        "trace": block_trace.estimate, "trace_stderr": block_trace.stderr,
                                        "trace_batch_stderr": block_trace.batch_stderr}
    return record
