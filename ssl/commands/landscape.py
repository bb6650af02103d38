"""``sslkit landscape``: the loss landscape of a checkpoint, from Hessian-vector products.

    sslkit landscape -c configs/demo.yaml --ckpt_path runs/demo/version_0/checkpoints/last.ckpt --out runs/landscape
    sslkit landscape -c configs/demo.yaml --ckpt_path CKPT --loss probe --batches 4

``--loss ssl`` (default): the method's own training objective at the checkpoint (an sslkit
checkpoint of the config's method): its ``step`` on ``--batches`` fixed batches of the train
split, each with fixed augmentation draws, BatchNorm in train mode (its running statistics
put back after), the momentum encoders, queue and prototypes held as the checkpoint has them;
the Hessian is that of the trained networks (backbone, projector, predictor). For SwAV that
leaves out the prototypes, and the codes (Sinkhorn-Knopp assignments, computed under no_grad as
in the official main_swav.py) are constants of each product: the Hessian of the swapped
prediction with prototypes and codes held fixed, part of the objective.
With ``--fisher``, also the true Fisher of the method's own softmax (MoCo v2's 1 + K InfoNCE
logits, SwAV's prototype scores: ``mean_x J^T (diag p - p p^T) J`` with p the model's own
distribution): top eigenvalues, Hutchinson trace, density.
``--loss probe``: the cross-entropy of a linear probe fitted on the checkpoint's frozen
features (any format ``load_backbone`` reads), as a function of the backbone's parameters; with
``--fisher``, the true Fisher of the probe's softmax and the empirical Fisher of its
per-example gradients (the backbone in eval mode, so examples are independent).
Products are averaged over the batches (PyHessian's data-set Hessian, Yao et al. 2020).

Beside every Hessian figure: the weight norms (all measured parameters, and per block), and
the adaptive Hessian ``T H T``, ``T = diag(|w|)`` (adaptive sharpness, Kwon et al. 2021): its
top eigenvalues and trace, which rescaling a weight that feeds a BatchNorm cannot change,
where H's divide by the scale squared. A checkpoint whose measured BatchNorms have gamma
exactly 0 (timm's zero-initialised residual BatchNorms, at initialisation) is a point where the
loss is not twice differentiable: it warns, naming the layers (``twice_differentiable: false``,
``nondifferentiable_at`` in the json); measure after the first optimiser step.

Writes ``landscape.json`` (top eigenvalues with their residuals and ``converged``, the most
negative eigenvalue and whether it converged, trace with its standard error over probes and,
with several batches, each batch's trace and the standard error over batches, spectral density,
weight norms, the adaptive Hessian's top eigenvalues and trace, and per block weight norm,
trace and top eigenvalue; the loss measured, and the checkpoint's resolved path and SHA-256)
and ``landscape.png`` (density; eigenvalues and traces by block); beside the checkpoint too,
where ``sslkit report`` finds it and attaches it to that checkpoint only (same SHA-256).
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from sslkit.eval.objectives import (backbone_blocks, measure_fisher, measure_landscape, method_closures,
                                    method_logit_closures, not_twice_differentiable_warning, probe_closures,
                                    probe_per_example, trained_blocks)
from sslkit.eval.plots import plot_landscape

from .common import add_config_arguments, checkpoint_backbone, from_config, prepared_data, renamed, resolve_device


def parse(argv: list[str]) -> tuple[argparse.Namespace, object, object]:
    """The command line and the config's model and data module, built (nothing read yet)."""
    parser = argparse.ArgumentParser(prog="sslkit landscape", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--loss", choices=["ssl", "probe"], default="ssl")
    parser.add_argument("--batches", type=int, default=2, help="fixed batches of the train split, averaged")
    parser.add_argument("--top_k", type=int, default=3)
    parser.add_argument("--trace_samples", type=int, default=30, help="Hutchinson probes")
    parser.add_argument("--density_probes", type=int, default=4)
    parser.add_argument("--lanczos_steps", type=int, default=30)
    parser.add_argument("--tol", type=float, default=1e-3, help="relative residual of the top eigenvalues")
    parser.add_argument("--by_block", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    parser.add_argument("--seed", type=int, default=0, help="of the batches' augmentation draws and the probes")
    parser.add_argument("--fisher", type=lambda s: s.lower() in ("1", "true", "yes"), default=False,
                        help="also the true Fisher of the softmax (and, --loss probe, the empirical Fisher)")
    parser.add_argument("--out", default=None, help="folder (default: beside the checkpoint)")
    args, overrides = parser.parse_known_args(renamed(argv))
    if not args.ckpt_path:
        raise ValueError("sslkit landscape needs --ckpt_path: the checkpoint whose landscape to measure")
    if args.batches < 1:
        raise ValueError(f"--batches must be at least 1, got {args.batches}")
    model, data = from_config(args.config, overrides)
    return args, model, data


def fixed_batches(data, count: int, device: torch.device) -> list[dict]:
    """The first ``count`` batches of the train split, in order, prepared on ``device``."""
    batches = []
    for batch in data.eval_loader(data.eval_split("train")):
        batch = data.prepare(batch, device)
        if "image" in batch:
            batches.append(batch)
        if len(batches) == count:
            return batches
    raise ValueError(f"the train split holds fewer than --batches {count} batches")


def method_at(model, ckpt_path: str):
    """``model`` (the config's method) with every tensor of the sslkit checkpoint."""
    from sslkit.checkpoints import CheckpointError, read_checkpoint

    checkpoint = read_checkpoint(ckpt_path)
    if "state_dict" not in checkpoint or "sslkit_class_path" not in checkpoint:
        raise CheckpointError(f"'{ckpt_path}' is not an sslkit checkpoint: --loss ssl needs the method's own "
                              f"checkpoint (--loss probe takes any format)")
    model.on_load_checkpoint(checkpoint)
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"'{ckpt_path}' does not fit the config's method: {err}; pass the config(s) it was "
                              f"trained with") from err
    return model


def probe_objective(args, model, data, batches: list[dict], device: torch.device):
    """A linear probe fitted (L-BFGS, as ``sslkit probe``) on the frozen features of the
    train split, then held fixed: closures of its cross-entropy and the backbone's blocks."""
    from sslkit.eval.card import FeatureSource
    from sslkit.eval.linear import fit_logistic_regression, linear_probe

    backbone = checkpoint_backbone(args).to(device).eval()
    view = model.augment.eval_view.to(device)
    source = FeatureSource(backbone, data, view, device, {}, None)
    result = linear_probe(source("train"), source("val"), device=device)
    train_x, train_y = source("train")
    classifier = fit_logistic_regression(train_x, train_y, result.l2, int(train_y.max()) + 1, device=device)

    def head(features: torch.Tensor) -> torch.Tensor:
        return classifier.logits(features)

    images = [view(batch)["image"] for batch in batches]
    labels = [batch["label"] for batch in batches]
    fisher = ([lambda x=x: head(backbone(x)) for x in images], probe_per_example(backbone, head, images, labels))
    return probe_closures(backbone, head, images, labels), backbone_blocks(backbone), backbone, result.top1, fisher


def run(parsed) -> None:
    args, model, data = parsed
    device = resolve_device(args.device)
    data = prepared_data(data, device)
    batches = fixed_batches(data, args.batches, device)
    start = time.perf_counter()
    extra = {}
    if args.loss == "ssl":
        model = method_at(model.to(device), args.ckpt_path).train()
        closures, blocks, module = method_closures(model, batches, args.seed), trained_blocks(model), model
        fisher = (method_logit_closures(model, batches, args.seed), None) if args.fisher else None
    else:
        closures, blocks, module, probe_top1, fisher = probe_objective(args, model.to(device), data, batches, device)
        extra["probe_top1"] = probe_top1
    record = measure_landscape(closures, blocks, module, args.top_k, args.trace_samples, args.density_probes,
                               args.lanczos_steps, args.tol, args.by_block, args.seed)
    if not record["twice_differentiable"]:
        warnings.warn(f"sslkit landscape: {not_twice_differentiable_warning(record['nondifferentiable_at'])}",
                      stacklevel=2)
    if args.fisher:
        record.update(measure_fisher(fisher[0], [p for group in blocks.values() for p in group], module, args.top_k,
                                     args.trace_samples, args.density_probes, args.lanczos_steps, args.tol,
                                     args.seed, per_example=fisher[1]))
    from sslkit.checkpoints import file_digest

    is_file = Path(args.ckpt_path).is_file()
    record.update(ckpt_path=str(Path(args.ckpt_path).resolve()) if is_file else args.ckpt_path,
                  ckpt_sha256=file_digest(args.ckpt_path) if is_file else None, loss=args.loss,
                  batch_size=len(batches[0]["label"]), seconds=time.perf_counter() - start, **extra)
    out = Path(args.out) if args.out else Path(args.ckpt_path).parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "landscape.json").write_text(json.dumps(record, indent=2))
    plot_landscape(record, out / "landscape.png", f"{Path(args.ckpt_path).name}: {args.loss} loss")
    beside = Path(args.ckpt_path).with_name("landscape.json")
    if beside != out / "landscape.json" and Path(args.ckpt_path).is_file():
        beside.write_text(json.dumps(record, indent=2))
    top = ", ".join(f"{v:.4g}" for v in record["top_eigenvalues"])
    batch_error = (f" (+- {record['trace_batch_stderr']:.2g} over batches)"
                   if record.get("trace_batch_stderr") is not None else "")
    unconverged = "" if record["converged"] and record["most_negative_converged"] else " (not all converged)"
    print(f"sslkit landscape ({args.loss}, {record['parameters']:,} parameters, {len(batches)} batches): top "
          f"eigenvalues {top}; most negative {record['most_negative_eigenvalue']:.4g}{unconverged}; trace "
          f"{record['trace']:.4g} +- {record['trace_stderr']:.2g}{batch_error}; weight norm "
          f"{record['weight_norm']:.4g}; {record['seconds']:.1f} s")
    if "adaptive_top_eigenvalues" in record:
        adaptive = ", ".join(f"{v:.4g}" for v in record["adaptive_top_eigenvalues"])
        print(f"  adaptive Hessian T H T, T = diag(|w|): top eigenvalues {adaptive}; trace "
              f"{record['adaptive_trace']:.4g} +- {record['adaptive_trace_stderr']:.2g}")
    if not record["twice_differentiable"]:
        print(f"  not twice differentiable here: gamma = 0 in {', '.join(record['nondifferentiable_at'])}")
    for name, block in record.get("by_block", {}).items():
        print(f"  {name:>18}: top {block['top_eigenvalue']:10.4g}   trace {block['trace']:10.4g}   "
              f"weight norm {block['weight_norm']:10.4g}")
    for key, name in (("fisher", "true Fisher"), ("empirical_fisher", "empirical Fisher")):
        if key in record:
            top = ", ".join(f"{v:.4g}" for v in record[key]["top_eigenvalues"])
            print(f"  {name}: top eigenvalues {top}; trace {record[key]['trace']:.4g} "
                  f"+- {record[key]['trace_stderr']:.2g}")
    print(f"sslkit landscape: wrote {out / 'landscape.json'} and {out / 'landscape.png'}")


def main(argv: list[str]) -> None:
    run(parse(argv))
