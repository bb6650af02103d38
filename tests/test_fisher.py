"""The Fisher operators of sslkit.eval against dense matrices built independently on a tiny
network (2-layer MLP, 64 parameters, float64): the true Fisher ``mean_x J^T (diag p - p p^T) J``
from ``torch.autograd.functional.jacobian`` of the logits, the empirical Fisher ``G^T G / N`` from a
loop of per-example ``torch.autograd.grad``; the gradient noise between tr/B and tr; a method's
logits closure against its own loss."""
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from helpers import tiny_data, tiny_moco, tiny_swav
from sslkit.eval.hvp import EmpiricalFisherProducts, FisherProducts, PerExample
from sslkit.eval.landscape import (empirical_fisher_spectrum, empirical_fisher_top_eigenvalue, fisher_spectrum,
                                   fisher_top_eigenvalue, gradient_noise_top, gradient_second_moment_top)
from sslkit.eval.objectives import (measure_fisher, method_closures, method_logit_closures, probe_per_example,
                                    trained_blocks)


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4)).double()


def data(n=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,), generator=g)


def flat_grad(loss, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


def dense_fisher(model, x):
    """mean_x J_x^T (diag p - p p^T) J_x, J from torch.autograd.functional.jacobian."""
    names, params = zip(*model.named_parameters())
    sizes = [p.numel() for p in params]

    def logits(theta):
        values = {k: t.view_as(p) for k, t, p in zip(names, theta.split(sizes), params)}
        return functional_call(model, values, (x,))

    theta = torch.cat([p.detach().reshape(-1) for p in params])
    J = torch.autograd.functional.jacobian(logits, theta)  # [N, C, n]
    p = logits(theta).detach().softmax(-1)
    M = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("bci,bcd,bdj->ij", J, M, J) / len(x)


def dense_empirical_fisher(model, x, y):
    params = list(model.parameters())
    G = torch.stack([flat_grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), params) for i in range(len(x))])
    return G.T @ G / len(x)


def as_matrix(operator, n):
    with operator as A:
        return A(torch.eye(n, dtype=torch.float64))


def test_the_true_fisher_operator_is_the_dense_fisher():
    model, (x, _) = mlp(), data()
    params = list(model.parameters())
    dense = dense_fisher(model, x)
    assert torch.allclose(as_matrix(FisherProducts(lambda: model(x), params), 64), dense, atol=1e-14)
    exact = torch.linalg.eigvalsh(dense)
    top = fisher_top_eigenvalue(lambda: model(x), params, k=3, tol=1e-8)
    assert top.converged and torch.allclose(top.eigenvalues, exact[-3:].flip(0), rtol=1e-7)
    halves = [lambda: model(x[:6]), lambda: model(x[6:])]  # the mean over closures (equal halves)
    assert torch.allclose(as_matrix(FisherProducts(halves, params), 64), dense, atol=1e-14)


def test_fisher_spectrum_top_trace_and_density():
    model, (x, _) = mlp(), data()
    params = list(model.parameters())
    dense = dense_fisher(model, x)
    exact = torch.linalg.eigvalsh(dense)
    spectrum = fisher_spectrum(lambda: model(x), params, k=2, tol=1e-8, trace_samples=200, density_probes=2,
                               lanczos_steps=64)
    assert torch.allclose(spectrum.top.eigenvalues, exact[-2:].flip(0), rtol=1e-7)
    trace = spectrum.trace
    assert trace.samples == 200 and abs(trace.estimate - float(dense.trace())) < 4 * trace.stderr
    assert bool((trace.values >= -1e-12).all())  # z^T F z >= 0: F is positive semi-definite
    density = spectrum.density
    nodes = density.nodes[density.weights > 1e-12]
    assert float(nodes.max()) == pytest.approx(float(exact[-1]), rel=1e-6)  # the Krylov space closes: exact nodes
    assert float(nodes.min()) > -1e-10
    # a full Lanczos run is exact quadrature: sum_i w_i theta_i = v^T F v of each probe
    assert abs(float(torch.trapezoid(density.density, density.grid)) - 1) < 1e-6
    record = spectrum.record()
    assert record["top_eigenvalues"] == spectrum.top.eigenvalues.tolist() and "density" in record


def test_a_minus_infinity_logit_is_a_class_of_probability_zero():
    """BG_Swaps leaves -inf where a sample got no hard negative: such a class adds nothing."""
    model, (x, _) = mlp(), data()
    params = list(model.parameters())
    mask = torch.zeros(len(x), 5, dtype=torch.bool)
    mask[::2, 4] = True

    def padded():
        logits = model(x)
        extra = logits[:, :1] * 2  # a fifth class, depending on the parameters, -inf in every other row
        return torch.cat([logits, extra], 1).masked_fill(mask, float("-inf"))

    with_inf = as_matrix(FisherProducts(padded, params), 64)
    assert torch.isfinite(with_inf).all()
    # rows with -inf: the 4-class Fisher of those rows; the others: the 5-class one of theirs
    masked, kept = mask[:, 4].nonzero()[:, 0], (~mask[:, 4]).nonzero()[:, 0]
    four = dense_fisher(model, x[masked]) * len(masked)
    five = as_matrix(FisherProducts(lambda: padded()[kept], params), 64) * len(kept)
    assert torch.allclose(with_inf, (four + five) / len(x), atol=1e-14)


def test_the_empirical_fisher_operator_is_the_dense_one():
    model, (x, y) = mlp(), data()
    params = list(model.parameters())
    dense = dense_empirical_fisher(model, x, y)
    loss = PerExample(lambda a, b: F.cross_entropy(model(a), b), x, y)
    assert torch.allclose(as_matrix(EmpiricalFisherProducts(loss, params, model), 64), dense, atol=1e-14)
    exact = torch.linalg.eigvalsh(dense)
    top = empirical_fisher_top_eigenvalue(loss, params, k=3, tol=1e-8, model=model)
    assert top.converged and torch.allclose(top.eigenvalues, exact[-3:].flip(0), rtol=1e-7)
    spectrum = empirical_fisher_spectrum(loss, params, k=1, tol=1e-8, density_probes=2, lanczos_steps=20, model=model)
    assert spectrum.trace.samples == 0 and spectrum.trace.estimate == pytest.approx(float(dense.trace()), rel=1e-12)
    nodes = spectrum.density.nodes[spectrum.density.weights > 1e-12]
    assert float(nodes.max()) == pytest.approx(float(exact[-1]), rel=1e-6) and float(nodes.min()) > -1e-10
    # rank <= N = 12 of 64: the 13th eigenvalue is 0
    assert float(exact[-13]) < 1e-12 * float(exact[-1])
    batches = [PerExample(lambda a, b: F.cross_entropy(model(a), b), x[:6], y[:6]),
               PerExample(lambda a, b: F.cross_entropy(model(a), b), x[6:], y[6:])]
    assert torch.allclose(as_matrix(EmpiricalFisherProducts(batches, params, model), 64), dense, atol=1e-14)


def test_the_empirical_fisher_differs_from_the_true_one_and_uses_the_labels():
    model, (x, y) = mlp(), data()
    params = list(model.parameters())
    loss = PerExample(lambda a, b: F.cross_entropy(model(a), b), x, y)
    empirical = empirical_fisher_top_eigenvalue(loss, params, tol=1e-8, model=model).eigenvalues[0]
    true = fisher_top_eigenvalue(lambda: model(x), params, tol=1e-8).eigenvalues[0]
    assert abs(float(empirical - true)) > 1e-3 * float(true)


def test_a_loss_coupling_the_examples_is_refused_and_nothing_changes():
    model, (x, y) = mlp(), data()
    params = list(model.parameters())
    centred = PerExample(lambda a, b: F.cross_entropy(model(a - a.mean(0)), b), x, y)  # the batch's mean couples
    with pytest.raises(ValueError, match="not separable over examples"):
        empirical_fisher_top_eigenvalue(centred, params, model=model)
    with pytest.raises(TypeError, match="PerExample"):
        empirical_fisher_top_eigenvalue(lambda: F.cross_entropy(model(x), y), params, model=model)
    with pytest.raises(ValueError, match="needs model="):
        empirical_fisher_top_eigenvalue(PerExample(lambda a, b: F.cross_entropy(model(a), b), x, y), params)
    before = [p.detach().clone() for p in params]
    torch.manual_seed(3)
    rng = torch.get_rng_state()
    empirical_fisher_spectrum(PerExample(lambda a, b: F.cross_entropy(model(a), b), x, y), params, density_probes=1,
                              lanczos_steps=5, model=model)
    assert all(torch.equal(a, b) for a, b in zip(before, params)) and all(p.grad is None for p in params)
    assert torch.equal(rng, torch.get_rng_state())


def test_a_probes_loss_is_separable_with_the_backbone_in_eval_mode():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh()).double().eval()
    head = nn.Linear(6, 4).double()
    x, y = data()
    params = list(backbone.parameters())
    losses = probe_per_example(backbone, head, [x], [y])
    G = torch.stack([flat_grad(F.cross_entropy(head(backbone(x[i:i + 1])), y[i:i + 1]), params)
                     for i in range(len(x))])
    result = empirical_fisher_top_eigenvalue(losses, params, tol=1e-8, model=backbone)
    assert float(result.eigenvalues[0]) == pytest.approx(float(torch.linalg.eigvalsh(G.T @ G / len(x))[-1]), rel=1e-7)
    backbone.train()  # batch statistics couple the examples
    with pytest.raises(ValueError, match="not separable|more than 1 value"):
        empirical_fisher_top_eigenvalue(probe_per_example(backbone, head, [x], [y]), params, model=backbone)


def test_gradient_noise_lies_between_trace_over_b_and_trace():
    model, (x, y) = mlp(), data(n=20)
    params = list(model.parameters())
    batches = [(x[i:i + 5], y[i:i + 5]) for i in range(0, 20, 5)]
    closures = [lambda xb=xb, yb=yb: F.cross_entropy(model(xb), yb) for xb, yb in batches]
    grads = torch.stack([flat_grad(c(), params) for c in closures])
    trace = float((grads ** 2).sum(1).mean())  # tr((1/B) sum g g^T) = mean ||g||^2
    top = float(gradient_noise_top(closures, params).eigenvalues[0])
    assert trace / len(closures) <= top <= trace
    with pytest.warns(FutureWarning, match="gradient_noise_top"):
        old = gradient_second_moment_top(closures, params)
    assert float(old.eigenvalues[0]) == top
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gradient_noise_top(closures, params)


def method_batches(count=1, size=16):
    data = tiny_data(batch_size=size)
    data.setup("fit")
    loader = iter(data.eval_loader(data.eval_split("train")))
    return [next(loader) for _ in range(count)]


@pytest.mark.parametrize("symmetric", [False, True], ids=["asymmetric", "symmetric"])
def test_mocos_logits_closure_gives_its_step_loss(symmetric):
    """Cross-entropy at target 0 (the positive) of MoCo v2's logits closure = its step's loss, on the
    same views and queue; the logits are [rows, 1 + K]."""
    torch.manual_seed(0)
    model = tiny_moco(symmetric=symmetric).train()
    batches = method_batches(2, size=8)
    losses, logits = method_closures(model, batches), method_logit_closures(model, batches)
    for loss, logit in zip(losses, logits):
        value = loss()
        z = logit()
        assert z.shape == ((2 if symmetric else 1) * 8, 1 + model.queue.size)
        assert F.cross_entropy(z, torch.zeros(len(z), dtype=torch.long)).item() == pytest.approx(value.item(), rel=1e-6)


@pytest.mark.parametrize("build", [tiny_moco, tiny_swav], ids=["moco", "swav"])
def test_the_true_fisher_of_a_method_leaves_it_as_it_was(build):
    torch.manual_seed(0)
    model = build().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for group in trained_blocks(model).values() for p in group]
    closures = method_logit_closures(model, method_batches(size=8))
    record = measure_fisher(closures, params, model, top_k=1, trace_samples=2, density_probes=0, tol=0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # queue, prototypes, BN
    assert record["fisher"]["top_eigenvalues"][0] > 0 and record["fisher"]["trace"] > 0
    rows = 4 * 8 if build is tiny_swav else 8  # SwAV: 2 global + 2 local crops
    classes = model.prototypes.out_features if build is tiny_swav else 1 + model.queue.size
    assert closures[0]().shape == (rows, classes)


def test_a_method_without_a_softmax_has_no_logits_closure():
    with pytest.raises(TypeError, match="no step_logits"):
        method_logit_closures(nn.Linear(2, 2), [])
