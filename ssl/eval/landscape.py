"""Loss-landscape geometry from Hessian-vector products, never forming the Hessian.

* ``top_eigenvalues``: the k largest (or most negative) eigenvalues by Lanczos with full
  reorthogonalisation (Paige 1972; Golub & Van Loan, *Matrix Computations*, sec. 10.1), stopped when
  every wanted Ritz pair (theta, y) has ``||H y - theta y|| <= tol |theta|``, which puts an
  eigenvalue of H within ``tol |theta|`` of theta.
* ``hessian_trace``: Hutchinson (1989), ``tr H = E[z^T H z]`` over Rademacher z.
* ``adaptive_top_eigenvalues`` / ``adaptive_hessian_trace``: the same for ``T H T`` with
  ``T = diag(|w|)``, the Hessian in the elementwise-normalised parameterisation of adaptive
  sharpness (Kwon et al. 2021, ASAM): rescaling a weight that feeds a BatchNorm divides H's
  eigenvalues but leaves these unchanged (sslkit.eval.hvp.AdaptiveHessianProducts derives it).
* ``spectral_density``: stochastic Lanczos quadrature (Golub & Meurant 1994; Ghorbani, Krishnan &
  Xiao 2019). m Lanczos steps from a unit probe v give nodes theta_i (eigenvalues of the tridiagonal
  T) and weights tau_i (squared first components of its eigenvectors) with
  ``sum_i tau_i f(theta_i) = v^T f(H) v`` for every polynomial f of degree < 2m; averaged over
  probes and Gaussian-broadened they estimate the eigenvalue density.
* ``fisher_top_eigenvalue`` / ``fisher_spectrum``: the true Fisher of a softmax over logits,
  ``mean_x J^T (diag p - p p^T) J`` with p the model's own distribution (top eigenvalues, trace,
  density by the same Lanczos, Hutchinson and SLQ on its products); a method's softmax (MoCo v2's
  InfoNCE logits, SwAV's prototype scores) through ``sslkit.eval.objectives.method_logit_closures``.
* ``empirical_fisher_top_eigenvalue`` / ``empirical_fisher_spectrum``: ``(1/N) sum_i g_i g_i^T``
  of per-example gradients (vmap of grad) of a loss separable over examples (``PerExample``).
* ``gradient_noise_top`` (formerly ``gradient_second_moment_top``): the top eigenvalues of the
  second moment of B mini-batch gradients, between tr/B and tr: a squared gradient norm, no
  Fisher spectrum.

Every function takes the loss as one closure or a sequence of closures (one per batch, products
averaged, as PyHessian does over a data set; Yao et al. 2020); under torch.distributed every product
is averaged over ranks, and probes come from a generator seeded by ``seed``, the same on every rank.
Parameters, ``model``'s buffers and the global RNG states are as they were after every call; while
it runs, each pass over the closures starts from the entry RNG state (see sslkit.eval.hvp).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .hvp import (HVP_METHODS, AdaptiveHessianProducts, Closures, EmpiricalFisherProducts, FisherProducts,
                  HessianProducts, Modules, PerExample, Products, hessian_vector_product)

__all__ = [
    "HVP_METHODS", "CurvatureSpectrum", "EigenResult", "PerExample", "SpectralDensity", "TraceEstimate",
    "adaptive_hessian_trace", "adaptive_top_eigenvalues", "empirical_fisher_spectrum",
    "empirical_fisher_top_eigenvalue", "fisher_spectrum", "fisher_top_eigenvalue",
    "gradient_noise_top", "gradient_second_moment_top", "hessian_trace", "hessian_vector_product",
    "spectral_density", "top_eigenvalues",
]

MIN_PROBES = 10


@dataclass
class EigenResult:
    """``eigenvalues`` [k] (float64; descending for "largest", ascending for "smallest");
    ``eigenvectors`` [k, n] unit rows over the params concatenated in order, when asked for;
    ``residuals`` [k], ``||A y - theta y||``; ``hvps``, the matrix-vector products taken;
    ``converged``, whether every residual met the tolerance (or the Krylov space became exact)."""

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor | None
    residuals: torch.Tensor
    hvps: int
    converged: bool


@dataclass
class TraceEstimate:
    """Hutchinson's estimate of tr(H) with its standard error over probes (std of the per-probe
    ``values`` over sqrt(samples)); unpacks as ``(estimate, stderr)``. ``batch_values``
    ``[batches, samples]``: the same probes' values on each closure's Hessian alone (``values`` is
    their mean over batches); ``by_batch`` each batch's trace estimate and ``batch_stderr`` the
    standard error over batches, ``std(by_batch) / sqrt(batches)`` (``None`` with one batch): how
    much the figure would move with other batches (the probes' noise is in it too)."""

    estimate: float
    stderr: float
    samples: int
    values: torch.Tensor
    batch_values: torch.Tensor | None = None

    @property
    def by_batch(self) -> torch.Tensor | None:
        return None if self.batch_values is None else self.batch_values.mean(1)

    @property
    def batch_stderr(self) -> float | None:
        if self.batch_values is None or len(self.batch_values) < 2:
            return None
        return float(self.by_batch.std() / math.sqrt(len(self.batch_values)))

    def record(self, prefix: str = "trace") -> dict:
        """As plain data: ``{prefix, prefix_stderr, prefix_samples, prefix_by_batch, prefix_batch_stderr}``."""
        by_batch = self.by_batch
        return {prefix: self.estimate, f"{prefix}_stderr": self.stderr, f"{prefix}_samples": self.samples,
                f"{prefix}_by_batch": None if by_batch is None else by_batch.tolist(),
                f"{prefix}_batch_stderr": self.batch_stderr}

    def __iter__(self):
        return iter((self.estimate, self.stderr))


@dataclass
class SpectralDensity:
    """The eigenvalue density on ``grid`` (Gaussian broadening ``sigma``, trapezoid integral 1) and
    the quadrature behind it: ``nodes`` and ``weights`` [probes, steps], each probe's weights summing
    to 1 (zero-padded where its Krylov space closed early). Unpacks as ``(grid, density)``."""

    grid: torch.Tensor
    density: torch.Tensor
    nodes: torch.Tensor
    weights: torch.Tensor
    sigma: float
    hvps: int

    def moment(self, m: int) -> float:
        """``mean over probes of sum_i w_i theta_i^m``: an unbiased estimate of tr(H^m)/n, exact
        for each probe while m < 2 * steps."""
        return float((self.weights * self.nodes ** m).sum(1).mean())

    def __iter__(self):
        return iter((self.grid, self.density))


class _Lanczos:
    """P Lanczos runs side by side on the operator A, fully reorthogonalised (classical Gram-Schmidt,
    repeated when it removes over 30% of the norm; Daniel, Gragg, Kaufman & Stewart 1976). A run whose
    Krylov space closes (beta ~ 0) stops there, its T exact, or, given a generator, goes on from a
    random vector orthogonal to its basis (a zero coupling in T: a new block)."""

    def __init__(self, A: Products, start: torch.Tensor, capacity: int,
                 generator: torch.Generator | None = None) -> None:
        P, n = start.shape
        self.A, self.generator, self.capacity = A, generator, capacity
        self.basis = start.new_empty(P, min(capacity, 32), n)
        self.alpha = torch.zeros(P, capacity, dtype=torch.float64)
        self.beta = torch.zeros(P, capacity, dtype=torch.float64)
        self.length = torch.zeros(P, dtype=torch.long)
        self.active = torch.ones(P, dtype=torch.bool)
        self.v = start / start.norm(dim=1, keepdim=True)
        self.steps, self.scale = 0, 0.0

    def _orthogonalise(self, w: torch.Tensor, rows: torch.Tensor, m: int) -> torch.Tensor:
        V = self.basis[:, :m] if len(rows) == len(self.basis) else self.basis[rows, :m]
        for _ in range(2):
            before = w.norm(dim=1)
            w = w - (V.transpose(1, 2) @ (V @ w[..., None]))[..., 0]
            if (w.norm(dim=1) >= 0.7 * before).all():
                break
        return w

    def step(self) -> None:
        j, P = self.steps, len(self.basis)
        if j == self.basis.shape[1]:
            extra = self.basis.new_empty(P, min(j, self.capacity - j), self.basis.shape[2])
            self.basis = torch.cat([self.basis, extra], 1)
        rows = self.active.nonzero()[:, 0]
        v = self.v[rows]
        self.basis[rows, j] = v
        w = self.A(v)
        alpha = (w * v).sum(1, dtype=torch.float64).cpu()
        w = self._orthogonalise(w, rows, j + 1)
        beta = w.norm(dim=1).double().cpu()
        if not (torch.isfinite(alpha).all() and torch.isfinite(beta).all()):
            raise FloatingPointError("Lanczos met a non-finite Hessian-vector product")
        self.scale = max(self.scale, float(alpha.abs().max()), float(beta.max()))
        closed = beta <= 100 * torch.finfo(w.dtype).eps * self.scale
        beta[closed] = 0.0
        self.alpha[rows, j], self.beta[rows, j], self.length[rows] = alpha, beta, j + 1
        self.steps = j + 1
        self.v[rows] = w / torch.where(closed, 1.0, beta).to(w)[:, None]
        for r in rows[closed].tolist():
            if self.generator is None or j + 1 >= min(self.capacity, self.basis.shape[2]):
                self.active[r] = False
                continue
            z = torch.randn(self.basis.shape[2], generator=self.generator, dtype=w.dtype).to(w.device)
            z = self._orthogonalise(z[None], torch.tensor([r]), j + 1)[0]
            self.v[r] = z / z.norm()

    def ritz(self, row: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ritz values (ascending), T's eigenvectors and the residual norms of the Ritz pairs."""
        m = int(self.length[row])
        off = self.beta[row, :m - 1]
        T = torch.diag(self.alpha[row, :m]) + torch.diag(off, 1) + torch.diag(off, -1)
        theta, S = torch.linalg.eigh(T)
        return theta, S, (self.beta[row, m - 1] * S[m - 1]).abs()


def _extreme(A: Products, k: int, which: str, tol: float, max_iter: int, eigenvectors: bool,
             seed: int) -> EigenResult:
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest', got {which!r}")
    if not 1 <= k <= A.n:
        raise ValueError(f"k={k} must be between 1 and the number of parameters, {A.n}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    steps = min(max_iter, A.n)
    if steps < k:
        raise ValueError(f"max_iter={max_iter} Lanczos steps cannot give k={k} eigenvalues")
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(1, A.n, generator=generator, dtype=A.dtype).to(A.device)
    lanczos = _Lanczos(A, start, steps, generator)
    while True:
        lanczos.step()
        theta, S, residual = lanczos.ritz(0)
        m = len(theta)
        if m < k:
            continue
        wanted = torch.arange(m - 1, m - 1 - k, -1) if which == "largest" else torch.arange(k)
        converged = bool((residual[wanted] <= tol * theta[wanted].abs()).all()) or m == A.n
        if converged or m == steps or not lanczos.active[0]:
            break
    vectors = None
    if eigenvectors:
        vectors = S[:, wanted].T.to(A.dtype).to(A.device) @ lanczos.basis[0, :m]
        vectors /= vectors.norm(dim=1, keepdim=True)
    return EigenResult(theta[wanted], vectors, residual[wanted], A.products, converged)


def top_eigenvalues(
    loss_fn: Closures, params: Sequence[torch.Tensor], k: int = 1, *, which: str = "largest",
    tol: float = 1e-3, max_iter: int = 100, eigenvectors: bool = False, seed: int = 0,
    model: Modules = None, hvp: str = "double-backward",
) -> EigenResult:
    """The k largest eigenvalues of the Hessian of ``loss_fn`` (mean over closures) with respect to
    ``params``, or with ``which="smallest"`` the k most negative (a negative one: not a minimum).
    Lanczos keeps up to ``max_iter`` basis vectors of n entries; of an eigenvalue repeated exactly it
    finds one copy (more only after its Krylov space closes and it restarts). ``model`` (module or modules the closures run) has its buffers restored and
    enables ``hvp="forward-over-reverse"``."""
    with HessianProducts(loss_fn, params, model, hvp) as A:
        return _extreme(A, k, which, tol, max_iter, eigenvectors, seed)


def hessian_trace(
    loss_fn: Closures, params: Sequence[torch.Tensor], samples: int = 100, *, rtol: float | None = None,
    probe_batch: int = 8, seed: int = 0, model: Modules = None, hvp: str = "double-backward",
) -> TraceEstimate:
    """Hutchinson's trace estimate from up to ``samples`` Rademacher probes, ``probe_batch`` at a
    time; with ``rtol``, it stops once ``stderr <= rtol |estimate|`` (after at least 10 probes).
    With several closures the same probes also give each batch's trace (``by_batch``,
    ``batch_stderr``)."""
    if samples < 2:
        raise ValueError(f"samples must be at least 2 for a standard error, got {samples}")
    with HessianProducts(loss_fn, params, model, hvp) as A:
        return _hutchinson(A, samples, rtol, probe_batch, seed)


def adaptive_top_eigenvalues(
    loss_fn: Closures, params: Sequence[torch.Tensor], k: int = 1, *, which: str = "largest", eta: float = 0.0,
    tol: float = 1e-3, max_iter: int = 100, eigenvectors: bool = False, seed: int = 0,
    model: Modules = None, hvp: str = "double-backward",
) -> EigenResult:
    """The k largest (or most negative) eigenvalues of ``T H T``, ``T = diag(|w| + eta)`` at the
    current ``params``: the Hessian in the elementwise-normalised coordinates of adaptive
    sharpness (Kwon et al. 2021, "ASAM", ICML; ``eta = 0`` by default). Rescaling a weight that
    feeds a train-mode BatchNorm, by channel or as a whole, leaves them unchanged where H's
    change (sslkit.eval.hvp.AdaptiveHessianProducts); an eigenvector is in the normalised
    coordinates (``T^-1`` maps it back to a direction in w). Otherwise as ``top_eigenvalues``."""
    with AdaptiveHessianProducts(loss_fn, params, model, hvp, eta) as A:
        return _extreme(A, k, which, tol, max_iter, eigenvectors, seed)


def adaptive_hessian_trace(
    loss_fn: Closures, params: Sequence[torch.Tensor], samples: int = 100, *, eta: float = 0.0,
    rtol: float | None = None, probe_batch: int = 8, seed: int = 0, model: Modules = None,
    hvp: str = "double-backward",
) -> TraceEstimate:
    """Hutchinson's estimate of ``tr(T H T) = sum_i (|w_i| + eta)^2 H_ii`` (Kwon et al. 2021;
    invariant to BatchNorm's rescaling of the weight feeding it), as ``hessian_trace``."""
    if samples < 2:
        raise ValueError(f"samples must be at least 2 for a standard error, got {samples}")
    with AdaptiveHessianProducts(loss_fn, params, model, hvp, eta) as A:
        return _hutchinson(A, samples, rtol, probe_batch, seed)


def _hutchinson(A: Products, samples: int, rtol: float | None, probe_batch: int, seed: int) -> TraceEstimate:
    if samples < 2:
        raise ValueError(f"samples must be at least 2 for a standard error, got {samples}")
    generator = torch.Generator().manual_seed(seed)
    batch_values = torch.zeros(len(A.closures), 0, dtype=torch.float64)
    while batch_values.shape[1] < samples:
        P = min(probe_batch, samples - batch_values.shape[1])
        z = torch.randint(0, 2, (P, A.n), generator=generator, dtype=A.dtype).mul_(2).sub_(1).to(A.device)
        batch_values = torch.cat([batch_values, A.quadratic_forms(z)[1]], 1)
        values = batch_values.mean(0)
        stderr = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else math.inf
        if rtol is not None and len(values) >= MIN_PROBES and stderr <= rtol * abs(float(values.mean())):
            break
    return TraceEstimate(float(values.mean()), stderr, len(values), values, batch_values)


def spectral_density(
    loss_fn: Closures, params: Sequence[torch.Tensor], num_probes: int = 8, lanczos_steps: int = 80, *,
    grid: int | torch.Tensor = 1000, sigma: float | None = None, probe_batch: int = 1, seed: int = 0,
    model: Modules = None, hvp: str = "double-backward",
) -> SpectralDensity:
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature from ``num_probes`` random
    unit (normalised Gaussian) probes, ``probe_batch`` of them side by side (memory: probe_batch *
    lanczos_steps vectors of n entries). ``grid`` is a number of points spanning the nodes or the
    points themselves; ``sigma`` defaults to 1% of the nodes' range."""
    with HessianProducts(loss_fn, params, model, hvp) as A:
        return _slq(A, num_probes, lanczos_steps, grid, sigma, probe_batch, seed)


def _slq(A: Products, num_probes: int, lanczos_steps: int, grid: int | torch.Tensor, sigma: float | None,
         probe_batch: int, seed: int) -> SpectralDensity:
    generator = torch.Generator().manual_seed(seed)
    steps = min(lanczos_steps, A.n)
    nodes = torch.zeros(num_probes, steps, dtype=torch.float64)
    weights = torch.zeros_like(nodes)
    before = A.products
    for first in range(0, num_probes, probe_batch):
        P = min(probe_batch, num_probes - first)
        lanczos = _Lanczos(A, torch.randn(P, A.n, generator=generator, dtype=A.dtype).to(A.device), steps)
        while lanczos.active.any() and lanczos.steps < steps:
            lanczos.step()
        for r in range(P):
            theta, S, _ = lanczos.ritz(r)
            nodes[first + r, :len(theta)], weights[first + r, :len(theta)] = theta, S[0] ** 2
    hvps = A.products - before
    used = nodes[weights > 0]
    lo, hi = float(used.min()), float(used.max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 1e-3 * max(abs(hi), 1.0)
    if isinstance(grid, int):
        grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, grid, dtype=torch.float64)
    grid = torch.as_tensor(grid, dtype=torch.float64).cpu()
    kernel = torch.exp(-0.5 * ((grid - nodes[..., None]) / sigma) ** 2)
    density = (weights[..., None] * kernel).sum((0, 1))
    total = torch.trapezoid(density, grid)
    if not total > 0:
        raise ValueError(f"the grid [{float(grid.min()):.3g}, {float(grid.max()):.3g}] misses the spectrum "
                         f"[{lo:.3g}, {hi:.3g}] (sigma {sigma:.3g})")
    return SpectralDensity(grid, density / total, nodes, weights, sigma, hvps)


@dataclass
class CurvatureSpectrum:
    """One operator's ``top`` eigenvalues (Lanczos), ``trace`` (Hutchinson, or exact where
    ``trace.samples`` is 0) and ``density`` (SLQ; ``None`` when not asked for)."""

    top: EigenResult
    trace: TraceEstimate
    density: SpectralDensity | None

    def record(self) -> dict:
        """As plain data (JSON)."""
        out = {"top_eigenvalues": self.top.eigenvalues.tolist(), "converged": self.top.converged,
               "top_residuals": self.top.residuals.tolist(), **self.trace.record()}
        if self.density is not None:
            out["density"] = {"grid": self.density.grid.tolist(), "density": self.density.density.tolist(),
                              "sigma": self.density.sigma}
        return out


def _spectrum(A: Products, k: int, tol: float, max_iter: int, trace_samples: int, density_probes: int,
              lanczos_steps: int, grid: int | torch.Tensor, seed: int, exact_trace: float | None = None
              ) -> CurvatureSpectrum:
    top = _extreme(A, k, "largest", tol, max_iter, False, seed)
    if exact_trace is not None:
        trace = TraceEstimate(exact_trace, 0.0, 0, torch.zeros(0, dtype=torch.float64))
    else:
        trace = _hutchinson(A, trace_samples, None, 8, seed)
    density = _slq(A, density_probes, lanczos_steps, grid, None, 1, seed) if density_probes > 0 else None
    return CurvatureSpectrum(top, trace, density)


def fisher_top_eigenvalue(
    logits_fn: Closures, params: Sequence[torch.Tensor], k: int = 1, *, tol: float = 1e-3,
    max_iter: int = 100, eigenvectors: bool = False, seed: int = 0, model: Modules = None,
) -> EigenResult:
    """The k largest eigenvalues of the (true) Fisher information of a softmax over ``logits_fn() -> [B, C]``,
    ``F = E_x E_{y ~ p(y|x)}[grad log p(y|x) grad log p(y|x)^T] = mean_x J_x^T (diag p - p p^T) J_x``
    with ``p = softmax(logits)`` the model's own predictive distribution (no labels; the mean over
    x is over the batch's rows, then over closures and ranks). For softmax outputs F equals the
    Gauss-Newton matrix of the cross-entropy at any target, so each product is one
    ``J^T (diag p - p p^T) J v`` (sslkit.eval.hvp.FisherProducts), by Lanczos as in top_eigenvalues.
    A method's own softmax: ``sslkit.eval.objectives.method_logit_closures``."""
    with FisherProducts(logits_fn, params, model) as A:
        return _extreme(A, k, "largest", tol, max_iter, eigenvectors, seed)


def fisher_spectrum(
    logits_fn: Closures, params: Sequence[torch.Tensor], k: int = 1, *, tol: float = 1e-3, max_iter: int = 100,
    trace_samples: int = 30, density_probes: int = 4, lanczos_steps: int = 30, grid: int | torch.Tensor = 200,
    seed: int = 0, model: Modules = None,
) -> CurvatureSpectrum:
    """The true Fisher of ``fisher_top_eigenvalue``: its k largest eigenvalues (Lanczos), its trace
    (Hutchinson, ``trace_samples`` Rademacher probes) and its eigenvalue density (SLQ,
    ``density_probes`` probes of ``lanczos_steps`` steps; 0 probes: none), on one operator (one
    closure's graph serves every product)."""
    with FisherProducts(logits_fn, params, model) as A:
        return _spectrum(A, k, tol, max_iter, trace_samples, density_probes, lanczos_steps, grid, seed)


def empirical_fisher_top_eigenvalue(
    losses: PerExample | Sequence[PerExample], params: Sequence[torch.Tensor], k: int = 1, *,
    tol: float = 1e-3, max_iter: int = 100, eigenvectors: bool = False, seed: int = 0, model: Modules = None,
) -> EigenResult:
    """The k largest eigenvalues of the empirical Fisher ``(1/N) sum_i g_i g_i^T`` of per-example
    gradients at the observed labels (``PerExample`` losses, one per batch; sslkit.eval.hvp.
    EmpiricalFisherProducts: vmap of grad under functional_call of ``model``, products
    ``G^T (G v) / N``), by Lanczos. Its rank is at most the number of examples. Only for a loss
    separable over examples (a probe's cross-entropy with the backbone in eval mode); a
    batch-coupled loss (InfoNCE over the batch, SwAV's codes, train-mode BatchNorm) is refused."""
    with EmpiricalFisherProducts(losses, params, model) as A:
        return _extreme(A, k, "largest", tol, max_iter, eigenvectors, seed)


def empirical_fisher_spectrum(
    losses: PerExample | Sequence[PerExample], params: Sequence[torch.Tensor], k: int = 1, *, tol: float = 1e-3,
    max_iter: int = 100, density_probes: int = 4, lanczos_steps: int = 30, grid: int | torch.Tensor = 200,
    seed: int = 0, model: Modules = None,
) -> CurvatureSpectrum:
    """The empirical Fisher of ``empirical_fisher_top_eigenvalue``: top eigenvalues (Lanczos), the
    trace exactly (``||G||_F^2 / N``; ``trace.samples`` 0) and the density (SLQ)."""
    with EmpiricalFisherProducts(losses, params, model) as A:
        return _spectrum(A, k, tol, max_iter, 0, density_probes, lanczos_steps, grid, seed, exact_trace=A.trace())


def gradient_noise_top(
    loss_fns: Closures, params: Sequence[torch.Tensor], k: int = 1, *, eigenvectors: bool = False,
    model: Modules = None,
) -> EigenResult:
    """The k largest eigenvalues of the uncentred second moment of B mini-batch gradients,
    ``M = (1/B) sum_b g_b g_b^T``, one gradient per closure, exactly: M's non-zero eigenvalues are those
    of the B x B Gram matrix ``G_bc = g_b . g_c / B``, and its eigenvectors ``sum_b s_b g_b``
    normalised. Keeps the B gradients (B vectors of n entries); under DDP each is averaged over ranks.

    M has rank at most B, so its top eigenvalue lies between ``tr(M) / B`` and ``tr(M) = mean_b
    ||g_b||^2``: with a few batches it is a mean squared gradient norm (the mean gradient's plus the
    mini-batch noise's), not a Fisher spectrum. The Fisher: ``fisher_top_eigenvalue`` /
    ``fisher_spectrum`` (true) and ``empirical_fisher_top_eigenvalue`` (per-example gradients)."""
    with Products(loss_fns, params, model) as A:
        if not 1 <= k <= min(len(A.closures), A.n):
            raise ValueError(f"k={k} must be between 1 and the rank bound min(batches, n) = "
                             f"{min(len(A.closures), A.n)}")
        A.isolation.reset()
        grads = torch.stack([A.gradient(i) for i in range(len(A.closures))])
    values, S = torch.linalg.eigh((grads @ grads.T).double().cpu() / len(grads))
    wanted = torch.arange(len(values) - 1, len(values) - 1 - k, -1)
    vectors = None
    if eigenvectors:
        vectors = S[:, wanted].T.to(grads) @ grads
        vectors /= vectors.norm(dim=1, keepdim=True)
    return EigenResult(values[wanted], vectors, torch.zeros(k, dtype=torch.float64), 0, True)


def gradient_second_moment_top(*args, **kwargs) -> EigenResult:
    """Deprecated name of ``gradient_noise_top`` (its top eigenvalue is no Fisher eigenvalue: it lies
    between tr/B and tr of B gradients); removed in the next release."""
    warnings.warn("gradient_second_moment_top is renamed gradient_noise_top (the top eigenvalue of B mini-batch "
                  "gradients' second moment, between tr/B and tr; not a Fisher spectrum: see fisher_spectrum); "
                  "the old name goes in the next release", FutureWarning, stacklevel=2)
    return gradient_noise_top(*args, **kwargs)
