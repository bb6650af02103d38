"""Curvature that BatchNorm's scale cannot fake (issue 30): the adaptive Hessian T H T, T = diag(|w|)
(Kwon et al. 2021), against dense torch.func Hessians; rescaling a BatchNorm-fed weight; weight
norms, convergence and per-batch traces in measure_landscape; zero-gamma BatchNorms flagged as
points where the loss is not twice differentiable; each DDP rank's own share of the monitor's
batches."""
import copy
import math
import warnings
from types import SimpleNamespace

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import tiny_data, tiny_moco
from sslkit.eval import LandscapeMonitor
from sslkit.eval.hvp import AdaptiveHessianProducts
from sslkit.eval.landscape import (adaptive_hessian_trace, adaptive_top_eigenvalues, hessian_trace,
                                   top_eigenvalues)
from sslkit.eval.landscape_monitor import rank_share
from sslkit.eval.objectives import measure_landscape, zero_gamma_batchnorms
from test_landscape import data, dense_hessian, mlp


def bn_net(seed=0):
    """conv (no bias) -> train-mode BatchNorm -> tanh -> pool -> linear; 99 parameters, float64.
    BatchNorm's eps is 1e-300, below float64's resolution of the variance (torch refuses 0), so
    the conv weight is exactly scale-invariant."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3, eps=1e-300), nn.Tanh(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 3)).double().train()


def images(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def flat_params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


SCALINGS = {"uniform": torch.tensor([2.0, 2.0, 2.0]), "per-channel": torch.tensor([2.0, 0.5, 3.0])}


@pytest.mark.parametrize("scaling", sorted(SCALINGS))
def test_rescaling_a_batchnorm_fed_weight_changes_h_but_not_the_adaptive_hessian(scaling):
    """w' = S w with S scaling each output channel of the conv feeding a train-mode BatchNorm:
    the loss is unchanged, H' = S^-1 H S^-1 (uniform c = 2: the conv block's eigenvalues and trace
    divide by 4), and T' H' T' = T H T, so the adaptive eigenvalues and trace are unchanged."""
    x, y = images()
    a = bn_net()
    b = copy.deepcopy(a)
    c = SCALINGS[scaling].double()
    with torch.no_grad():
        b[0].weight.mul_(c[:, None, None, None])
    with torch.no_grad():
        losses = [F.cross_entropy(m(x), y).item() for m in (a, b)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-12)

    H = [dense_hessian(m, x, y) for m in (a, b)]
    s = torch.ones(len(H[0]), dtype=torch.float64)
    s[:54] = c.repeat_interleave(18)  # the conv weight [3, 2, 3, 3] comes first, output channel outermost
    assert torch.allclose(H[1], H[0] / s[:, None] / s[None], rtol=1e-7, atol=1e-10)
    T = [flat_params(m).abs() for m in (a, b)]
    THT = [t[:, None] * h * t[None] for t, h in zip(T, H)]
    assert torch.allclose(THT[1], THT[0], rtol=1e-7, atol=1e-10)

    closures = [lambda m=m: F.cross_entropy(m(x), y) for m in (a, b)]
    params = [list(m.parameters()) for m in (a, b)]
    plain = [top_eigenvalues(f, p, k=2, tol=1e-9, model=m).eigenvalues for f, p, m in zip(closures, params, (a, b))]
    for value, h in zip(plain, H):  # H's own eigenvalues move with the scale
        assert torch.allclose(value, torch.linalg.eigvalsh(h)[-2:].flip(0), rtol=1e-6)
    assert not torch.allclose(plain[0], plain[1], rtol=1e-2)
    conv = [top_eigenvalues(f, [m[0].weight], tol=1e-10, model=m).eigenvalues[0] for f, m in zip(closures, (a, b))]
    conv_trace = [hessian_trace(f, [m[0].weight], samples=20, model=m).estimate for f, m in zip(closures, (a, b))]
    if scaling == "uniform":
        assert float(conv[1]) == pytest.approx(float(conv[0]) / 4, rel=1e-7)
        assert conv_trace[1] == pytest.approx(conv_trace[0] / 4, rel=1e-9)  # same probes

    adaptive = [adaptive_top_eigenvalues(f, p, k=2, tol=1e-10, model=m)
                for f, p, m in zip(closures, params, (a, b))]
    assert all(r.converged for r in adaptive)
    assert torch.allclose(adaptive[0].eigenvalues, torch.linalg.eigvalsh(THT[0])[-2:].flip(0), rtol=1e-7)
    assert torch.allclose(adaptive[1].eigenvalues, adaptive[0].eigenvalues, rtol=1e-8)
    traces = [adaptive_hessian_trace(f, p, samples=30, model=m) for f, p, m in zip(closures, params, (a, b))]
    assert traces[1].estimate == pytest.approx(traces[0].estimate, rel=1e-9)  # same probes, same matrix
    assert abs(traces[0].estimate - float(THT[0].trace())) <= 4 * traces[0].stderr


@pytest.mark.parametrize("eta", [0.0, 0.1])
@pytest.mark.parametrize("hvp", ["double-backward", "forward-over-reverse"])
def test_adaptive_products_are_the_dense_t_h_t(eta, hvp):
    x, y = images()
    model = bn_net()
    H = dense_hessian(model, x, y)
    t = flat_params(model).abs() + eta
    dense = t[:, None] * H * t[None]
    V = torch.randn(5, len(H), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with AdaptiveHessianProducts(lambda: F.cross_entropy(model(x), y), list(model.parameters()), model, hvp,
                                 eta) as A:
        assert torch.allclose(A(V), V @ dense, rtol=1e-9, atol=1e-11)
        products, forms = A.quadratic_forms(V)
        assert torch.allclose(forms[0], (V @ dense * V).sum(1), rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match="eta must be non-negative"):
        AdaptiveHessianProducts(lambda: F.cross_entropy(model(x), y), list(model.parameters()), eta=-1.0)


def test_the_trace_of_each_batch_from_the_same_probes():
    """Each closure's quadratic forms are those of its own dense Hessian, with the very probes of
    the overall estimate (Rademacher, generator seeded by ``seed``, one block of ``probe_batch``);
    their mean over batches is the overall value, and the standard error over batches is the
    spread of the per-batch traces over sqrt(batches)."""
    model = mlp()
    x, y = data("mlp", n=36)
    params = list(model.parameters())
    parts = [(x[i:i + 12], y[i:i + 12]) for i in range(0, 36, 12)]
    closures = [lambda xb=xb, yb=yb: F.cross_entropy(model(xb), yb) for xb, yb in parts]
    result = hessian_trace(closures, params, samples=8, probe_batch=8, seed=3, model=model)
    n = sum(p.numel() for p in params)
    z = torch.randint(0, 2, (8, n), generator=torch.Generator().manual_seed(3), dtype=torch.float64).mul_(2).sub_(1)
    for values, (xb, yb) in zip(result.batch_values, parts):
        assert torch.allclose(values, (z @ dense_hessian(model, xb, yb) * z).sum(1), rtol=1e-9, atol=1e-12)
    assert torch.allclose(result.values, result.batch_values.mean(0), rtol=1e-12)
    assert result.batch_stderr == pytest.approx(float(result.by_batch.std()) / math.sqrt(3), rel=1e-12)
    many = hessian_trace(closures, params, samples=200, model=model)
    for estimate, values, (xb, yb) in zip(many.by_batch, many.batch_values, parts):
        exact = float(dense_hessian(model, xb, yb).trace())
        assert abs(float(estimate) - exact) <= 4 * float(values.std()) / math.sqrt(200)
    single = hessian_trace(closures[0], params, samples=4, model=model)
    assert single.batch_stderr is None and single.record()["trace_batch_stderr"] is None


def test_measure_landscape_records_weight_norms_convergence_and_the_adaptive_hessian():
    x, y = images()
    model = bn_net()
    closures = [lambda: F.cross_entropy(model(x[:12]), y[:12]), lambda: F.cross_entropy(model(x[12:]), y[12:])]
    blocks = {"conv": [model[0].weight], "bn": list(model[1].parameters()), "head": list(model[5].parameters())}
    record = measure_landscape(closures, blocks, model, top_k=2, trace_samples=10, density_probes=1, lanczos_steps=8,
                               tol=1e-6)
    norms = {name: math.sqrt(sum(float(p.detach().pow(2).sum()) for p in group)) for name, group in blocks.items()}
    assert record["weight_norms"] == pytest.approx(norms, rel=1e-12)
    assert record["weight_norm"] == pytest.approx(math.sqrt(sum(v * v for v in norms.values())), rel=1e-12)
    assert all(record["by_block"][name]["weight_norm"] == pytest.approx(norms[name]) for name in blocks)
    assert record["converged"] and isinstance(record["most_negative_converged"], bool)
    assert all(isinstance(block["converged"], bool) for block in record["by_block"].values())
    assert len(record["top_residuals"]) == 2 and record["most_negative_residual"] >= 0
    assert len(record["trace_by_batch"]) == 2 and record["trace_batch_stderr"] > 0
    assert record["trace"] == pytest.approx(sum(record["trace_by_batch"]) / 2, rel=1e-10)
    H = (dense_hessian(model, x[:12], y[:12]) + dense_hessian(model, x[12:], y[12:])) / 2
    t = flat_params(model).abs()
    exact = torch.linalg.eigvalsh(t[:, None] * H * t[None])
    assert record["adaptive_top_eigenvalues"] == pytest.approx(exact[-2:].flip(0).tolist(), rel=1e-5)
    assert {"adaptive_converged", "adaptive_trace", "adaptive_trace_stderr",
            "adaptive_trace_batch_stderr"} <= set(record)
    assert record["twice_differentiable"] and record["nondifferentiable_at"] == []


def test_zero_gamma_batchnorms_are_points_where_the_loss_is_not_twice_differentiable():
    """timm zero-initialises the last BatchNorm of each residual block: flagged (by name) while
    gamma is exactly 0, and no longer once it has moved; measure_landscape records it."""
    resnet = timm.create_model("test_resnet", pretrained=False)
    assert zero_gamma_batchnorms(resnet) == ["layer1.0.bn2", "layer2.0.bn2", "layer3.0.bn3", "layer4.0.bn2"]
    assert zero_gamma_batchnorms(resnet, list(resnet.layer1.parameters())) == ["layer1.0.bn2"]
    with torch.no_grad():
        for name in zero_gamma_batchnorms(resnet):
            resnet.get_submodule(name).weight.fill_(1e-3)
    assert zero_gamma_batchnorms(resnet) == []

    x, y = images()
    model = bn_net()
    with torch.no_grad():
        model[1].weight.zero_()
    closure = lambda: F.cross_entropy(model(x), y)  # noqa: E731
    record = measure_landscape([closure], {"all": list(model.parameters())}, model, top_k=1, trace_samples=4,
                               density_probes=1, lanczos_steps=4, tol=1e-2, by_block=False, adaptive=False)
    assert record["twice_differentiable"] is False and record["nondifferentiable_at"] == ["1"]


def test_the_monitor_warns_at_a_zero_gamma_start():
    torch.manual_seed(0)
    module = tiny_moco().train()
    data = tiny_data(batch_size=16)
    data.setup("fit")
    monitor = LandscapeMonitor(batches=1, trace_samples=2, tol=0.5, at_start=True, adaptive=False)
    trainer = SimpleNamespace(datamodule=data, global_step=0)
    with pytest.warns(UserWarning, match=r"not twice differentiable.*layer1\.0\.bn2.*after the first optimiser step"):
        monitor.on_train_start(trainer, module)
    assert "backbone.model.layer1.0.bn2" in monitor.history[0]["nondifferentiable_at"]
    assert monitor.history[0]["val/weight_norm"] > 0
    with torch.no_grad():
        for name in monitor.history[0]["nondifferentiable_at"]:
            module.get_submodule(name).weight.fill_(0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        values = monitor.measure(trainer, module)
    assert monitor._kinks() == {} and "val/hessian_top" in values


def test_ranks_take_disjoint_shares_of_the_monitors_batches(monkeypatch):
    """The evaluation loader has no distributed sampler: rank r of 2 takes batches r, r + 2, ...
    of those one process reads in order (its rank and world read from torch.distributed)."""
    shares = [rank_share(iter(range(10)), 3, rank, 2) for rank in range(2)]
    assert shares == [[0, 2, 4], [1, 3, 5]]
    short = [rank_share(iter(range(5)), 3, rank, 2) for rank in range(2)]
    assert short == [[0, 2], [1, 3]]  # as many on every rank
    assert rank_share(range(4), 2, 0, 1) == [0, 1]
    data = tiny_data(batch_size=8)
    data.setup("fit")
    monitor, module = LandscapeMonitor(batches=2), SimpleNamespace(device=torch.device("cpu"))
    alone = monitor._batches(data, module, 4)
    ranks = []
    for r in range(2):
        monkeypatch.setattr("sslkit.eval.landscape_monitor.distributed.rank", lambda r=r: r)
        monkeypatch.setattr("sslkit.eval.landscape_monitor.distributed.world_size", lambda: 2)
        ranks.append(monitor._batches(data, module, 2))
    assert [len(r) for r in ranks] == [2, 2]
    for r, share in enumerate(ranks):
        for j, batch in enumerate(share):
            assert torch.equal(batch["image"], alone[2 * j + r]["image"])
    assert not torch.equal(ranks[0][0]["image"], ranks[1][0]["image"])



def test_the_monitor_measures_a_larger_batch_run_on_the_smaller_runs_batches():
    """SGD's noise control trains at 4x the batch; with ``batch_size`` its monitor measures the
    same images, draws and figures as the monitor of a run whose loader has that batch size."""
    small, large = tiny_data(batch_size=8), tiny_data(batch_size=16)
    small.setup("fit"), large.setup("fit")
    cpu = SimpleNamespace(device=torch.device("cpu"))
    reference = LandscapeMonitor(batches=2)._batches(small, cpu, 2)
    cut = LandscapeMonitor(batches=2, batch_size=8)._batches(large, cpu, 2)
    assert [len(b["image"]) for b in cut] == [8, 8]
    for a, b in zip(reference, cut):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])) if torch.is_tensor(a[key]) \
                else a[key] == b[key], key
    torch.manual_seed(0)
    module = tiny_moco().train()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(0.5)  # away from the zero-gamma kink
    settings = dict(batches=1, trace_samples=2, tol=0.5, adaptive=False)
    want = LandscapeMonitor(**settings).measure(SimpleNamespace(datamodule=small, global_step=1), module)
    got = LandscapeMonitor(**settings, batch_size=8).measure(SimpleNamespace(datamodule=large, global_step=1), module)
    assert got == want
    with pytest.raises(ValueError, match="batch_size 32 is larger than the data module's batch of 16"):
        LandscapeMonitor(batch_size=32)._batches(large, cpu, 1)
