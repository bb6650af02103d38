"""Hessian- and Fisher-vector products of a loss given as closures, never forming the matrix:
``HessianProducts``; ``AdaptiveHessianProducts``, ``T H T`` with ``T = diag(|w|)`` (adaptive
sharpness, Kwon et al. 2021: BatchNorm's rescaling of the weight feeding it cannot change it);
``FisherProducts``, the true Fisher of a softmax over logits (the
model's own distribution, no labels); ``EmpiricalFisherProducts``, ``G^T G / N`` of the
per-example gradients of a loss separable over examples (``PerExample``).

A product is the mean over the closures (one per batch, as PyHessian's ``dataloader_hv_product``
does over a data set; Yao et al. 2020) and, under ``torch.distributed``, over the ranks. Two
engines give ``Hv`` (Pearlmutter 1994, "Fast exact multiplication by the Hessian"):

* ``"double-backward"``: ``Hv = d(g . v)/dtheta`` with ``g = dL/dtheta`` taken with
  ``create_graph``. With one closure the gradient's graph is built once and every product is one
  backward pass through it; with several, a block of probes shares each batch's graph. Works on any
  closure. (Batching the probes with ``is_grads_batched`` was no faster on CPU, and 45x slower
  through float64 convolutions with BatchNorm.)
* ``"forward-over-reverse"``: ``jvp(grad(L))`` by ``torch.func`` on the closure run under
  ``functional_call`` of ``model``; probes batched with ``vmap``. Needs ``model``, recomputes the
  forward every call and keeps no graph between calls. (Nested forward mode through train-mode
  ``F.batch_norm`` is wrong in torch, pytorch/pytorch#196699, and with it ``torch.func.hessian``;
  jvp of grad is not: tests/test_landscape.py checks it against a dense Hessian.)

The first is the default: on a 2-core CPU (timm test_resnet, batch 32) a single product takes less
than half the time of the second, and with 8 probes batched the two are level
(tests/benchmarks/bench_landscape.py). Under DDP, closures should run the bare module (``.module``):
products are averaged over ranks here.

While an operator is open, attention runs through PyTorch's math kernel of
``scaled_dot_product_attention`` (``sdpa_kernel``): the fused CPU and GPU kernels have no
second derivative, so a ViT's Hessian needs it; the result is the same function.

While an operator is open its closures are one deterministic function: before every pass over
them the global RNGs (torch CPU and CUDA, Python, NumPy) and ``model``'s buffers are reset to
their state on entry, and on exit they are restored. A closure drawing random numbers (dropout,
augmentation) therefore sees the same draws in every product; which draws is the caller's to seed.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call, grad, grad_and_value, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from sslkit.nn.distributed import all_reduce_sum, world_size

Closure = Callable[[], torch.Tensor]
Closures = Closure | Sequence[Closure]
Modules = nn.Module | Sequence[nn.Module] | None
HVP_METHODS = ("double-backward", "forward-over-reverse")


def as_params(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    if not params:
        raise ValueError("params is empty: give the tensors to take the Hessian with respect to")
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor) or not p.is_floating_point():
            raise TypeError(f"params[{i}] is not a floating-point tensor")
        if not p.requires_grad:
            raise ValueError(f"params[{i}] (shape {tuple(p.shape)}) does not require grad: leave it out, "
                             f"or call requires_grad_() on it to include it")
    if len({id(p) for p in params}) < len(params):
        raise ValueError("params lists a tensor more than once")
    if len({(p.dtype, p.device) for p in params}) > 1:
        raise ValueError(f"params mix dtypes/devices {sorted({f'{p.dtype}/{p.device}' for p in params})}; "
                         f"analyse one dtype on one device")
    return params


def _as_module(model: Modules) -> nn.Module | None:
    if model is None or isinstance(model, nn.Module):
        return model
    modules = list(model)
    if not all(isinstance(m, nn.Module) for m in modules):
        raise TypeError("model must be an nn.Module or a sequence of them")
    return nn.ModuleList(modules)


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        all_reduce_sum(tensor).div_(world_size())
    return tensor


class Isolation:
    """The RNG states and ``module``'s buffers on entry; ``reset()`` puts them back, as does exit."""

    def __init__(self, module: nn.Module | None) -> None:
        self.buffers = [] if module is None else [(b, b.detach().clone()) for b in module.buffers()]
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.python = random.getstate()
        self.numpy = np.random.get_state()

    def reset(self) -> None:
        with torch.no_grad():
            for buffer, saved in self.buffers:
                buffer.copy_(saved)
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        random.setstate(self.python)
        np.random.set_state(self.numpy)


@contextmanager
def batchnorm_batch_statistics(module: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm normalises by batch statistics; its in-place running-statistics update
    is what torch.func cannot transform. Detach the running statistics for the duration (what
    ``torch.func.replace_all_batch_norm_modules_`` does for good) and put them back after."""
    detached = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            detached.append((m, m.running_mean, m.running_var, m.num_batches_tracked))
            m.running_mean = m.running_var = m.num_batches_tracked = None
    try:
        yield
    finally:
        for m, mean, var, count in detached:
            m.running_mean, m.running_var, m.num_batches_tracked = mean, var, count


class _Call(nn.Module):
    def __init__(self, module: nn.Module, closure: Closure) -> None:
        super().__init__()
        self.module, self.closure = module, closure

    def forward(self) -> torch.Tensor:
        return self.closure()


class Products:
    """``V [P, n] -> mean over closures and ranks of A_b V``: the base of the operators below. Use it
    as a context manager: entry state is recorded on construction and restored on exit."""

    minus_inf_allowed = False  # an output entry of -inf is allowed (a logit: probability 0)

    def __init__(self, closures: Closures, params: Sequence[torch.Tensor], model: Modules = None) -> None:
        self.closures = [closures] if callable(closures) else list(closures)
        if not self.closures:
            raise ValueError("no closures: give one callable, or a non-empty sequence of them (one per batch)")
        if not all(callable(c) for c in self.closures):
            raise TypeError("every loss_fn must be a callable taking no arguments")
        self.params = as_params(params)
        self.module = _as_module(model)
        self.sizes = [p.numel() for p in self.params]
        self.n = sum(self.sizes)
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        self.isolation = Isolation(self.module)
        self.keep = len(self.closures) == 1
        self.kept = None
        self.products = 0

    def functional_names(self, who: str, how: str) -> list[str]:
        """The names of ``params`` in ``model`` (wrapped as ``module``), for ``torch.func.functional_call``;
        ``who`` needs them and ``how`` they are used, for the error when ``model`` is missing or
        does not hold them."""
        if self.module is None:
            raise ValueError(f"{who} needs model=: the module(s) the closures run, whose parameters params are")
        names = {id(p): f"module.{name}" for name, p in self.module.named_parameters()}
        missing = [i for i, p in enumerate(self.params) if id(p) not in names]
        if missing:
            raise ValueError(f"params{missing} are not parameters of model: {how} through torch.func.functional_call")
        return [names[id(p)] for p in self.params]
    def __enter__(self) -> Products:
        self._attention = sdpa_kernel([SDPBackend.MATH])
        self._attention.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.kept = None
        self.isolation.reset()
        self._attention.__exit__(*exc)

    def output(self, i: int) -> torch.Tensor:
        out = self.closures[i]()
        name = f"loss_fn[{i}]" if len(self.closures) > 1 else "loss_fn"
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{name} returned {type(out).__name__}, not a tensor")
        if not out.requires_grad:
            raise ValueError(f"{name}'s output does not depend on params through autograd "
                             f"(computed under torch.no_grad, or detached?)")
        ok = torch.isfinite(out.detach())
        if self.minus_inf_allowed:
            ok |= out.detach() == float("-inf")
        finite = bool(ok.all())
        if all_reduce_sum(torch.tensor([0.0 if finite else 1.0], device=out.device)).item():
            if finite:
                raise FloatingPointError(f"{name}'s output is not finite on another rank")
            value = out.detach().flatten()[~ok.flatten()][0].item()
            raise FloatingPointError(f"{name}'s output is {value}: the curvature is undefined at this point")
        return out

    def loss(self, i: int) -> torch.Tensor:
        loss = self.output(i)
        if loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar loss, got shape {tuple(loss.shape)} "
                             f"(reduce it, e.g. with .mean())")
        return loss.reshape(())

    def split(self, V: torch.Tensor) -> list[torch.Tensor]:
        return [v.reshape(len(V), *p.shape) for v, p in zip(V.split(self.sizes, dim=1), self.params)]

    def flat(self, parts: Sequence[torch.Tensor], P: int) -> torch.Tensor:
        return torch.cat([part.reshape(P, -1) for part in parts], 1)

    def gradient(self, i: int) -> torch.Tensor:
        """The gradient of closure ``i``, averaged over ranks (call ``isolation.reset()`` first)."""
        grads = torch.autograd.grad(self.loss(i), self.params, allow_unused=True, materialize_grads=True)
        return mean_over_ranks(self.flat(grads, 1)[0])

    def prepare(self, i: int):
        raise NotImplementedError

    def apply(self, i: int, state, V: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, V: torch.Tensor) -> torch.Tensor:
        return self._products(V, False)[0]

    def quadratic_forms(self, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A V, Q)``: the products as a call gives them (``[P, n]``) and, from the same pass,
        each closure's quadratic forms ``Q[b, q] = V_q . A_b V_q`` (``[closures, P]``, float64 on
        the CPU, each averaged over ranks): a Hutchinson probe's value batch by batch, so the
        spread over batches costs no extra product (``Q.mean(0)`` is the usual ``V_q . A V_q``)."""
        total, forms = self._products(V, True)
        return total.reshape(-1, self.n), forms

    def _products(self, V: torch.Tensor, forms: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        single = V.dim() == 1
        V = V.reshape(-1, self.n).to(self.device, self.dtype)
        if self.kept is None:
            self.isolation.reset()
        total = torch.zeros_like(V)
        quadratic = torch.zeros(len(self.closures), len(V), dtype=torch.float64, device=self.device) if forms else None
        for i in range(len(self.closures)):
            state = self.kept if self.kept is not None else self.prepare(i)
            if self.keep:
                self.kept = state
            out = self.apply(i, state, V)
            total += out
            if forms:
                quadratic[i] = (V * out).sum(1, dtype=torch.float64)
        total = mean_over_ranks(total / len(self.closures))
        if forms:
            quadratic = mean_over_ranks(quadratic).cpu()
        if not torch.isfinite(total).all():
            raise FloatingPointError("a curvature-vector product is not finite (the loss is finite): "
                                     "the loss is not twice differentiable here, or overflows")
        self.products += len(V)
        return (total[0] if single else total), quadratic


class HessianProducts(Products):
    """``v -> Hv`` of the mean loss over the closures (and ranks); see the module docstring."""

    def __init__(self, loss_fn: Closures, params: Sequence[torch.Tensor], model: Modules = None,
                 hvp: str = "double-backward") -> None:
        super().__init__(loss_fn, params, model)
        if hvp not in HVP_METHODS:
            raise ValueError(f"hvp must be one of {HVP_METHODS}, got {hvp!r}")
        self.forward = hvp == "forward-over-reverse"
        if self.forward:
            self.names = self.functional_names("hvp='forward-over-reverse'", "forward-over-reverse substitutes them")
            self.keep = False
            try:
                for i in range(len(self.closures)):
                    self.loss(i)
            finally:
                self.isolation.reset()

    def prepare(self, i: int):
        if self.forward:
            return None
        grads = torch.autograd.grad(self.loss(i), self.params, create_graph=True, allow_unused=True)
        used = [j for j, g in enumerate(grads) if g is not None and g.requires_grad]
        return [grads[j] for j in used], used

    def apply(self, i: int, state, V: torch.Tensor) -> torch.Tensor:
        P, parts = len(V), self.split(V)
        if self.forward:
            return self._forward_over_reverse(i, parts, P)
        grads, used = state
        if not used:
            return torch.zeros_like(V)
        return torch.stack([self.flat(torch.autograd.grad(
            grads, self.params, [parts[j][q] for j in used], retain_graph=True, allow_unused=True,
            materialize_grads=True), 1)[0] for q in range(P)])

    def _forward_over_reverse(self, i: int, parts: list[torch.Tensor], P: int) -> torch.Tensor:
        call = _Call(self.module, self.closures[i])
        primals = {name: p.detach() for name, p in zip(self.names, self.params)}

        def loss(values: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(call, values, ()).reshape(())

        def hvp(tangents: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return jvp(grad(loss), (primals,), (tangents,))[1]

        tangents = dict(zip(self.names, parts))
        with batchnorm_batch_statistics(self.module):
            if P == 1:
                out = hvp({name: t[0] for name, t in tangents.items()})
            else:
                out = vmap(hvp, randomness="same")(tangents)
        return self.flat([out[name] for name in self.names], P).detach()


class AdaptiveHessianProducts(HessianProducts):
    """``v -> T H T v`` with ``T = diag(|w| + eta)``: the Hessian in the elementwise-normalised
    parameterisation of adaptive sharpness (Kwon, Kim, Park & Choi 2021, "ASAM: Adaptive
    sharpness-aware minimization for scale-invariant learning of deep neural networks", ICML;
    their normalisation operator ``T_w``, here with ``eta = 0`` by default), taken at the
    parameters' values on construction.

    Why BatchNorm cannot change it. Let a weight w feed a BatchNorm that normalises by batch
    statistics (train mode), and S = diag(s) scale output channel k's entries of w by ``c > 0`` (s
    = c there, 1 elsewhere). The loss is unchanged, ``L(S w) = L(w)`` for every w; differentiating
    twice, ``S H(S w) S = H(w)``, so at ``w' = S w`` the Hessian is ``H' = S^-1 H S^-1`` (c = 2 on
    every channel: the block's eigenvalues and trace divide by 4). The normalisation scales the
    other way, ``T' = diag(|S w|) = S T``, and diagonal matrices commute, so
    ``T' H' T' = S T S^-1 H S^-1 S T = T H T``: every eigenvalue, and the trace, of T H T are
    unchanged, exactly (with ``eta = 0``; ``eta > 0`` keeps bias-like entries near zero from
    vanishing but breaks the identity by ``O(eta / |w|)``). An entry with ``w_i = 0`` (a zero-
    initialised gamma) drops out of T H T; its curvature is not measured."""

    def __init__(self, loss_fn: Closures, params: Sequence[torch.Tensor], model: Modules = None,
                 hvp: str = "double-backward", eta: float = 0.0) -> None:
        super().__init__(loss_fn, params, model, hvp)
        if not eta >= 0:
            raise ValueError(f"eta must be non-negative, got {eta}")
        self.eta = eta
        self.scale = torch.cat([p.detach().abs().reshape(-1) for p in self.params]) + eta

    def apply(self, i: int, state, V: torch.Tensor) -> torch.Tensor:
        return self.scale * super().apply(i, state, V * self.scale)


class FisherProducts(Products):
    """``v -> Fv`` for the Fisher of a softmax classifier, ``F = mean_x J_x^T (diag p - p p^T) J_x``
    with ``J_x`` the Jacobian of the logits: the generalised Gauss-Newton matrix of the cross-entropy
    (Schraudolph 2002; Martens 2020, "New insights and perspectives on the natural gradient method").
    ``J v`` comes from the double-vjp trick (the vjp ``u -> J^T u`` is linear in ``u``; its vjp is ``J v``),
    so one closure's graph serves every product. ``p`` is the model's own predictive distribution
    ``softmax(logits)``: no labels enter (the true Fisher, not the empirical one). A logit of
    ``-inf`` is a class of probability 0 (BG_Swaps' missing hard negative) and adds nothing."""

    minus_inf_allowed = True

    def prepare(self, i: int):
        logits = self.output(i)
        if logits.dim() != 2:
            raise ValueError(f"logits_fn must return [batch, classes] logits, got shape {tuple(logits.shape)}")
        if not bool(torch.isfinite(logits.detach()).any(-1).all()):
            raise ValueError("logits_fn returned a row whose logits are all -inf (no class has any probability)")
        u = torch.zeros_like(logits, requires_grad=True)
        vjps = torch.autograd.grad(logits, self.params, u, create_graph=True, allow_unused=True)
        used = [j for j, g in enumerate(vjps) if g is not None]
        return logits, logits.detach().softmax(-1), u, [vjps[j] for j in used], used

    def apply(self, i: int, state, V: torch.Tensor) -> torch.Tensor:
        logits, probs, u, vjps, used = state
        parts, out = self.split(V), torch.zeros_like(V)
        if not used:
            return out
        for q in range(len(V)):
            jv = torch.autograd.grad(vjps, u, [parts[j][q] for j in used], retain_graph=True)[0]
            jv = jv.masked_fill(probs == 0, 0.0)  # a -inf logit's (or an underflowed class's) term is 0
            w = probs * (jv - (probs * jv).sum(-1, keepdim=True)) / len(logits)
            fv = torch.autograd.grad(logits, self.params, w, retain_graph=True, allow_unused=True,
                                     materialize_grads=True)
            out[q] = self.flat(fv, 1)[0]
        return out


class PerExample:
    """A loss that is a mean over independent examples: ``loss(*inputs)`` on the batch, and on
    example i (every tensor of ``inputs`` cut to its row i, kept as a batch of one) the loss
    term of that example. Called with no arguments it is the batch loss, so it is a closure of
    every operator here. The model must treat examples independently: BatchNorm in eval mode,
    no in-batch negatives (InfoNCE over the batch, SimCLR), no batch-level assignment
    (SwAV's Sinkhorn codes), no random draws (dropout) -- ``EmpiricalFisherProducts`` checks that
    the per-example losses average to the batch loss and refuses a loss that is not separable."""

    def __init__(self, loss: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> None:
        if not callable(loss):
            raise TypeError("PerExample's loss must be callable on the batch's tensors")
        if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
            raise TypeError("PerExample needs the batch as one or more tensors, examples along dim 0")
        if len({len(t) for t in inputs}) > 1:
            raise ValueError(f"PerExample's inputs disagree on the number of examples: {[len(t) for t in inputs]}")
        self.loss, self.inputs = loss, inputs

    def __len__(self) -> int:
        return len(self.inputs[0])

    def __call__(self) -> torch.Tensor:
        return self.loss(*self.inputs)


class _PerExampleCall(nn.Module):
    def __init__(self, module: nn.Module, loss: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.module, self.loss = module, loss

    def forward(self, *example: torch.Tensor) -> torch.Tensor:
        return self.loss(*(t[None] for t in example)).reshape(())


class EmpiricalFisherProducts(Products):
    """``v -> F_emp v`` for the empirical Fisher ``F_emp = (1/N) sum_i g_i g_i^T`` of a loss separable
    over examples (``PerExample``; one per batch, products averaged over batches and ranks), ``g_i``
    the gradient of example i's loss term at its observed label. The per-example gradients come
    from ``torch.func.vmap`` of ``torch.func.grad`` of the loss under ``functional_call`` of
    ``model``, once, as the N x n matrix G of each batch; a product is ``G^T (G v) / N``, the n x n
    matrix never formed (memory: N x n entries per batch, so for small N). ``trace()`` is exact,
    ``||G||_F^2 / N`` averaged over batches.

    Unlike the true Fisher (``FisherProducts``) it uses the observed labels, not samples of the
    model's distribution: the two differ away from a perfect fit (Kunstner, Balles & Hennig 2019,
    "Limitations of the empirical Fisher approximation")."""

    def __init__(self, losses: PerExample | Sequence[PerExample], params: Sequence[torch.Tensor],
                 model: Modules = None, rtol: float = 1e-4) -> None:
        super().__init__(losses, params, model)
        if not all(isinstance(c, PerExample) for c in self.closures):
            raise TypeError("the empirical Fisher needs PerExample losses (a loss and the batch it is "
                            "taken over, examples along dim 0), one per batch")
        self.names = self.functional_names("the empirical Fisher", "per-example gradients substitute them")
        self.rtol = rtol
        self.matrices: dict[int, torch.Tensor] = {}
        self.keep = False

    def per_example_gradients(self, i: int) -> torch.Tensor:
        """G of batch ``i``, ``[N, n]`` (rows: the examples' gradients, params concatenated)."""
        if i in self.matrices:
            return self.matrices[i]
        closure = self.closures[i]
        call = _PerExampleCall(self.module, closure.loss)
        primals = {name: p.detach() for name, p in zip(self.names, self.params)}

        def loss(values: dict[str, torch.Tensor], *example: torch.Tensor) -> torch.Tensor:
            return functional_call(call, values, example)

        self.isolation.reset()
        whole = self.loss(i).detach()
        self.isolation.reset()
        with batchnorm_batch_statistics(self.module):
            per_grad, per_loss = vmap(grad_and_value(loss),
                                      in_dims=(None,) + (0,) * len(closure.inputs),
                                      randomness="different")(primals, *closure.inputs)
        name = f"loss_fn[{i}]" if len(self.closures) > 1 else "loss_fn"
        mean = per_loss.detach().double().mean()
        if not torch.isclose(mean, whole.double(), rtol=self.rtol, atol=self.rtol * 1e-3):
            raise ValueError(f"{name} is not separable over examples: its per-example losses average to "
                             f"{float(mean):.6g}, the batch loss is {float(whole):.6g} (train-mode BatchNorm, "
                             f"in-batch negatives, a batch-level assignment or random draws couple the examples; "
                             f"the empirical Fisher of independent examples does not apply)")
        G = self.flat([per_grad[name].detach() for name in self.names], len(closure))
        if not torch.isfinite(G).all():
            raise FloatingPointError(f"{name}: a per-example gradient is not finite")
        self.matrices[i] = G
        return G

    def prepare(self, i: int):
        return self.per_example_gradients(i)

    def apply(self, i: int, state, V: torch.Tensor) -> torch.Tensor:
        G = state
        return (V @ G.T) @ G / len(G)

    def trace(self) -> float:
        """``tr F_emp`` exactly: the mean over batches (and ranks) of ``||G||_F^2 / N``."""
        total = sum(self.per_example_gradients(i).double().pow(2).sum() / len(self.closures[i])
                    for i in range(len(self.closures)))
        return float(mean_over_ranks(total.reshape(1) / len(self.closures))[0])


def hessian_vector_product(
    loss_fn: Closures, params: Sequence[torch.Tensor], vector: torch.Tensor | Sequence[torch.Tensor], *,
    model: Modules = None, hvp: str = "double-backward",
) -> torch.Tensor | list[torch.Tensor]:
    """``H v`` for the mean loss over ``loss_fn`` (one closure or one per batch) and ranks. ``vector``
    is flat (``[n]``, or ``[P, n]`` for P products at once, params concatenated in order) or a list
    shaped like ``params``, and the result has the same form. No side effects (module docstring)."""
    as_list = not isinstance(vector, torch.Tensor)
    with HessianProducts(loss_fn, params, model, hvp) as ops:
        flat = torch.cat([v.reshape(-1) for v in vector]) if as_list else vector
        if flat.shape[-1] != ops.n:
            raise ValueError(f"vector has {flat.shape[-1]} entries, params have {ops.n}")
        out = ops(flat.to(ops.device))
    return [part[0] for part in ops.split(out[None])] if as_list else out
