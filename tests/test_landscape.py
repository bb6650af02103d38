"""sslkit.eval.landscape against independent references: dense Hessians from torch.func.hessian of
the loss over a flattened parameter vector (float64), a Fisher and a gradient second moment (gradient noise) built
sample by sample with autograd, closed-form variances of the stochastic estimators, and one process
against two gloo ranks."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ddp import run_distributed
from sslkit.eval.landscape import (fisher_spectrum, fisher_top_eigenvalue, gradient_noise_top, hessian_trace,
                                   hessian_vector_product, spectral_density, top_eigenvalues)

METHODS = ["double-backward", "forward-over-reverse"]


def mlp(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Dropout(dropout), nn.Linear(10, 4)).double()


def cnn(seed=0):
    """135 parameters, BatchNorm in train mode: the Hessian of batch-statistics normalisation."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Tanh(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 3)).double()


def data(kind, n=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape, classes = ((n, 6), 4) if kind == "mlp" else ((n, 2, 6, 6), 3)
    return torch.randn(*shape, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def case(kind):
    model = mlp() if kind == "mlp" else cnn()
    x, y = data(kind)
    return model, x, y, lambda: F.cross_entropy(model(x), y)


class ExplicitBatchNorm2d(nn.Module):
    """Train-mode BatchNorm written out. The references do not go through F.batch_norm: its nested
    forward-mode derivative is wrong (pytorch/pytorch#196699), and with it torch.func.hessian's
    d2L/(d gamma d conv) block (torch 2.14; autograd's double backward and finite differences agree)."""

    def __init__(self, bn):
        super().__init__()
        self.weight, self.bias, self.eps = bn.weight, bn.bias, bn.eps

    def forward(self, h):
        mean, var = h.mean((0, 2, 3), keepdim=True), h.var((0, 2, 3), unbiased=False, keepdim=True)
        return (h - mean) / torch.sqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


def dense_hessian(model, x, y):
    """torch.func.hessian of the mean cross-entropy over the flattened parameters."""
    model = copy.deepcopy(model)
    for name, child in list(model.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(model, name, ExplicitBatchNorm2d(child))
    names, params = zip(*model.named_parameters())
    sizes = [p.numel() for p in params]

    def loss(flat):
        values = {name: t.view_as(p) for name, t, p in zip(names, flat.split(sizes), params)}
        return F.cross_entropy(functional_call(model, values, (x,)), y)

    return torch.func.hessian(loss)(torch.cat([p.detach().reshape(-1) for p in params]))


@pytest.mark.parametrize("hvp", METHODS)
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_extreme_eigenvalues_match_the_dense_hessian(kind, hvp):
    model, x, y, closure = case(kind)
    params = list(model.parameters())
    H = dense_hessian(model, x, y)
    exact = torch.linalg.eigvalsh(H)
    assert exact[0] < 0, "the test point should have negative curvature"

    top = top_eigenvalues(closure, params, k=3, model=model, hvp=hvp, eigenvectors=True)
    assert top.converged and top.hvps < len(exact)
    assert torch.allclose(top.eigenvalues, exact[-3:].flip(0), rtol=1e-3, atol=0)
    for value, vector in zip(top.eigenvalues, top.eigenvectors):
        assert (H @ vector - value * vector).norm() <= 1e-3 * abs(value) + 1e-9

    bottom = top_eigenvalues(closure, params, which="smallest", model=model, hvp=hvp)
    assert bottom.converged and bottom.eigenvalues[0] == pytest.approx(float(exact[0]), rel=1e-3)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_hutchinson_trace_within_four_standard_errors(kind):
    model, x, y, closure = case(kind)
    H = dense_hessian(model, x, y)
    samples = 300
    estimate, stderr = hessian_trace(closure, list(model.parameters()), samples=samples, model=model)
    assert abs(estimate - float(H.trace())) <= 4 * stderr
    # Var(z^T H z) = 2 sum_{i != j} H_ij^2 for Rademacher z
    expected = math.sqrt(2 * float((H ** 2).sum() - (H.diagonal() ** 2).sum()) / samples)
    assert 0.6 * expected <= stderr <= 1.6 * expected


def test_hutchinson_stops_early_at_the_relative_tolerance():
    model, x, y, closure = case("mlp")
    result = hessian_trace(closure, list(model.parameters()), samples=1000, rtol=0.1, probe_batch=4)
    assert 10 <= result.samples < 1000 and result.stderr <= 0.1 * abs(result.estimate)
    assert len(result.values) == result.samples


@pytest.mark.parametrize("kind, steps", [("mlp", 12), ("cnn", 12), ("mlp", 200)])
def test_slq_moments_and_normalisation(kind, steps):
    """For a probe v uniform on the unit sphere, v^T A v has mean tr(A)/n and variance
    2 (tr(A^2) - tr(A)^2 / n) / (n (n + 2)); the quadrature reproduces v^T H^m v exactly for
    m < 2 * steps (12 steps: Gauss quadrature; 200 >= n: the probe's Krylov space closes), so the
    moments' only error is the probes' sampling error: we allow 4 standard deviations of it."""
    model, x, y, closure = case(kind)
    exact = torch.linalg.eigvalsh(dense_hessian(model, x, y))
    n, probes = len(exact), 16
    result = spectral_density(closure, list(model.parameters()), num_probes=probes, lanczos_steps=steps,
                              probe_batch=4, model=model)
    grid, density = result
    assert np.trapezoid(density.numpy(), grid.numpy()) == pytest.approx(1.0, abs=1e-9)
    assert torch.allclose(result.weights.sum(1), torch.ones(probes, dtype=torch.float64), atol=1e-10)
    for m in (1, 2):
        power = exact ** m
        variance = 2 * (float((power ** 2).sum()) - float(power.sum()) ** 2 / n) / (n * (n + 2))
        assert abs(result.moment(m) - float(power.mean())) <= 4 * math.sqrt(variance / probes)
    assert grid[density.argmax()] == pytest.approx(float(exact[exact.abs().argmin()]), abs=5 * result.sigma)


def test_density_on_a_given_grid_integrates_to_one():
    model, x, y, closure = case("mlp")
    grid = torch.linspace(-1, 1, 501, dtype=torch.float64)
    out_grid, density = spectral_density(closure, list(model.parameters()), num_probes=2, lanczos_steps=10,
                                         grid=grid, sigma=0.05)
    assert torch.equal(out_grid, grid)
    assert np.trapezoid(density.numpy(), grid.numpy()) == pytest.approx(1.0, abs=1e-9)


def state_of(model):
    return ([p.detach().clone() for p in model.parameters()], [b.clone() for b in model.buffers()],
            torch.get_rng_state(), [m.training for m in model.modules()], [p.grad for p in model.parameters()])


def assert_same_state(before, after):
    for old, new in zip(before[0] + before[1], after[0] + after[1]):
        assert torch.equal(old, new)
    assert torch.equal(before[2], after[2]) and before[3] == after[3]
    assert all(g is None for g in after[4])


CALLS = {
    "top_eigenvalues": lambda f, p, m, h: top_eigenvalues(f, p, k=2, max_iter=10, model=m, hvp=h),
    "smallest": lambda f, p, m, h: top_eigenvalues(f, p, which="smallest", max_iter=10, model=m, hvp=h),
    "hessian_trace": lambda f, p, m, h: hessian_trace(f, p, samples=6, probe_batch=4, model=m, hvp=h),
    "spectral_density": lambda f, p, m, h: spectral_density(f, p, 3, 5, probe_batch=2, model=m, hvp=h),
    "hessian_vector_product": lambda f, p, m, h: hessian_vector_product(
        f, p, [torch.ones_like(q) for q in p], model=m, hvp=h),
    "fisher_top_eigenvalue": lambda f, p, m, h: fisher_top_eigenvalue(f.logits, p, max_iter=5, model=m),
    "fisher_spectrum": lambda f, p, m, h: fisher_spectrum(f.logits, p, max_iter=5, trace_samples=4, density_probes=1,
                                                          lanczos_steps=4, model=m),
    "gradient_noise_top": lambda f, p, m, h: gradient_noise_top([f, f], p, model=m),
}


@pytest.mark.parametrize("hvp", METHODS)
@pytest.mark.parametrize("call", sorted(CALLS))
def test_no_side_effects(call, hvp):
    """Train-mode BatchNorm updates its running statistics in every forward, dropout draws from the
    global RNG: after the call both are as before, as are the parameters, .grad and the modes."""
    model = nn.Sequential(cnn(), nn.Dropout(0.2))
    x, y = data("cnn")

    def closure():
        return F.cross_entropy(model(x), y)

    closure.logits = lambda: model(x)
    torch.manual_seed(5)
    before = state_of(model)
    CALLS[call](closure, list(model.parameters()), [model], hvp)
    assert_same_state(before, state_of(model))
    assert int(model[0][1].num_batches_tracked) == 0


@pytest.mark.parametrize("hvp", METHODS)
def test_a_random_closure_is_one_function_for_every_product(hvp):
    """Dropout draws a new mask in every forward; resetting the RNG to the entry state before every
    pass over the closures makes all products those of one Hessian, that of the mask drawn from the
    entry state (reference: dense Hessian column by column, the RNG reset before each)."""
    model = mlp(dropout=0.3)
    x, y = data("mlp")
    params = list(model.parameters())
    torch.manual_seed(11)
    entry = torch.get_rng_state()
    sizes, columns = [p.numel() for p in params], []
    for e in torch.eye(sum(sizes), dtype=torch.float64):
        torch.set_rng_state(entry)
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
        hv = torch.autograd.grad(grads, params, [t.view_as(p) for t, p in zip(e.split(sizes), params)])
        columns.append(torch.cat([h.reshape(-1) for h in hv]))
    H = torch.stack(columns)
    torch.set_rng_state(entry)
    assert torch.allclose(H, H.T, atol=1e-12)
    closure = lambda: F.cross_entropy(model(x), y)  # noqa: E731
    result = top_eigenvalues(closure, params, k=2, model=model, hvp=hvp)
    assert torch.allclose(result.eigenvalues, torch.linalg.eigvalsh(H)[-2:].flip(0), rtol=1e-3, atol=0)
    V = torch.randn(3, len(H), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(hessian_vector_product(closure, params, V, model=model, hvp=hvp), V @ H, atol=1e-12)
    assert torch.equal(torch.get_rng_state(), entry)


def dense_fisher(model, x):
    """(1/B) sum_b sum_c p_bc grad log p_bc grad log p_bc^T, one backward pass per sample and class."""
    params = list(model.parameters())
    fisher = 0
    for xb in x:
        log_p = F.log_softmax(model(xb[None])[0], -1)
        for c in range(len(log_p)):
            g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(log_p[c], params, retain_graph=True)])
            fisher = fisher + log_p[c].exp().detach() * torch.outer(g, g)
    return fisher / len(x)


def test_fisher_top_eigenvalues_match_a_dense_fisher():
    model = mlp()
    x, _ = data("mlp", n=6)
    exact = torch.linalg.eigvalsh(dense_fisher(model, x))
    result = fisher_top_eigenvalue(lambda: model(x), list(model.parameters()), k=2, tol=1e-6)
    assert result.converged
    assert torch.allclose(result.eigenvalues, exact[-2:].flip(0), rtol=1e-5, atol=0)
    halves = [lambda: model(x[:3]), lambda: model(x[3:])]
    assert fisher_top_eigenvalue(halves, list(model.parameters()), tol=1e-6).eigenvalues[0] == pytest.approx(
        float(exact[-1]), rel=1e-5)


def test_gradient_noise_matches_the_dense_second_moment():
    model = mlp()
    x, y = data("mlp", n=20)
    params = list(model.parameters())
    batches = [(x[i:i + 5], y[i:i + 5]) for i in range(0, 20, 5)]
    grads = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(F.cross_entropy(model(xb), yb), params)])
                         for xb, yb in batches])
    values, vectors = torch.linalg.eigh(grads.T @ grads / len(grads))
    closures = [lambda xb=xb, yb=yb: F.cross_entropy(model(xb), yb) for xb, yb in batches]
    result = gradient_noise_top(closures, params, k=2, eigenvectors=True)
    assert torch.allclose(result.eigenvalues, values[-2:].flip(0), rtol=1e-10)
    assert torch.allclose((result.eigenvectors * vectors[:, -2:].flip(1).T).sum(1).abs(),
                          torch.ones(2, dtype=torch.float64), atol=1e-8)


@pytest.mark.parametrize("hvp", METHODS)
def test_products_over_batches_are_the_mean(hvp):
    model = mlp()
    x, y = data("mlp")
    params = list(model.parameters())
    v = torch.randn(sum(p.numel() for p in params), dtype=torch.float64)
    halves = [(x[:16], y[:16]), (x[16:], y[16:])]
    closures = [lambda xb=xb, yb=yb: F.cross_entropy(model(xb), yb) for xb, yb in halves]
    mean = (dense_hessian(model, *halves[0]) + dense_hessian(model, *halves[1])) / 2
    out = hessian_vector_product(closures, params, v, model=model, hvp=hvp)
    assert torch.allclose(out, mean @ v, rtol=1e-10, atol=1e-12)
    assert torch.allclose(out, dense_hessian(model, x, y) @ v, rtol=1e-10, atol=1e-12)


def _ranks(rank, world_size, v):
    model = mlp()
    x, y = data("mlp")
    x, y = x.chunk(world_size)[rank], y.chunk(world_size)[rank]
    params = list(model.parameters())

    def closure():
        return F.cross_entropy(model(x), y)

    return (hessian_vector_product(closure, params, v),
            hessian_vector_product(closure, params, v, model=model, hvp="forward-over-reverse"),
            top_eigenvalues(closure, params, k=2, seed=3).eigenvalues,
            tuple(hessian_trace(closure, params, samples=20, seed=4)))


def test_two_gloo_ranks_with_half_batches_agree_with_one_process():
    v = torch.randn(114, dtype=torch.float64)
    ranks = run_distributed(_ranks, 2, v)
    whole = _ranks(0, 1, v)
    for hv, hv_forward, eig, trace in ranks:
        assert torch.equal(hv, ranks[0][0]) and torch.equal(eig, ranks[0][2])
        assert torch.allclose(hv, whole[0], rtol=1e-12, atol=1e-14)
        assert torch.allclose(hv_forward, whole[1], rtol=1e-12, atol=1e-14)
        assert torch.allclose(eig, whole[2], rtol=1e-9)
        assert trace == pytest.approx(whole[3], rel=1e-9)


def test_bad_input_is_named():
    model, x, y, closure = case("mlp")
    params = list(model.parameters())
    with pytest.raises(ValueError, match="k=115 must be between 1 and the number of parameters, 114"):
        top_eigenvalues(closure, params, k=115)
    with pytest.raises(ValueError, match="scalar loss, got shape \\(32,\\)"):
        top_eigenvalues(lambda: F.cross_entropy(model(x), y, reduction="none"), params)
    frozen = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="params\\[2\\] \\(shape \\(3,\\)\\) does not require grad"):
        hessian_trace(closure, params[:2] + [frozen])
    torch.manual_seed(2)
    entry = torch.get_rng_state()
    with pytest.raises(FloatingPointError, match="output is nan"):
        top_eigenvalues(lambda: F.cross_entropy(model(x), y) * torch.rand(()) * float("nan"), params)
    assert torch.equal(torch.get_rng_state(), entry)
    with pytest.raises(ValueError, match="needs model="):
        top_eigenvalues(closure, params, hvp="forward-over-reverse")
    with pytest.raises(ValueError, match="which must be"):
        top_eigenvalues(closure, params, which="middle")
    with pytest.raises(ValueError, match="logits"):
        fisher_top_eigenvalue(closure, params)
    with pytest.raises(ValueError, match="rank bound"):
        gradient_noise_top([closure, closure], params, k=3)
    with pytest.raises(ValueError, match="misses the spectrum"):
        spectral_density(closure, params, 1, 5, grid=torch.linspace(100, 101, 10, dtype=torch.float64), sigma=0.01)
    with pytest.raises(ValueError, match="does not depend on params"):
        hessian_trace(lambda: F.cross_entropy(model(x), y).detach(), params)
