"""The losses of SimCLR, SimSiam, Barlow Twins and VICReg (``sslkit.nn.losses``) against
their official code, transcribed here line by line from the fetched sources, and under 2 gloo
ranks against one process holding the whole batch (loss and gradients).

Sources: google-research/simclr ``objective.py`` (add_contrastive_loss); facebookresearch/
simsiam ``main_simsiam.py`` and ``simsiam/builder.py``; facebookresearch/barlowtwins
``main.py`` (BarlowTwins.forward, off_diagonal); facebookresearch/vicreg ``main_vicreg.py``
(VICReg.forward, FullGatherLayer)."""
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ddp import run_distributed
from sslkit.nn.distributed import gather_with_grad
from sslkit.nn.losses import barlow_twins_loss, negative_cosine, nt_xent, vicreg_loss

LARGE_NUM = 1e9


def official_simclr(hidden1, hidden2, temperature, replicas=1, replica_id=0):
    """add_contrastive_loss (hidden_norm=True) for the anchors of ``replica_id`` when the
    global batch (``hidden1``, ``hidden2``) is split over ``replicas``: ``tpu_cross_replica_
    concat`` gives every replica the whole batch, labels index the replica's rows."""
    hidden1_large, hidden2_large = F.normalize(hidden1, dim=-1), F.normalize(hidden2, dim=-1)
    batch_size = hidden1.shape[0] // replicas
    hidden1 = hidden1_large[replica_id * batch_size:(replica_id + 1) * batch_size]
    hidden2 = hidden2_large[replica_id * batch_size:(replica_id + 1) * batch_size]
    enlarged_batch_size = hidden1_large.shape[0]
    labels_idx = torch.arange(batch_size) + replica_id * batch_size
    labels = F.one_hot(labels_idx, enlarged_batch_size * 2).float()
    masks = F.one_hot(labels_idx, enlarged_batch_size).float()
    logits_aa = hidden1 @ hidden1_large.T / temperature - masks * LARGE_NUM
    logits_bb = hidden2 @ hidden2_large.T / temperature - masks * LARGE_NUM
    logits_ab = hidden1 @ hidden2_large.T / temperature
    logits_ba = hidden2 @ hidden1_large.T / temperature
    softmax_ce = lambda labels, logits: -(labels * F.log_softmax(logits, dim=1)).sum(1)  # noqa: E731
    loss_a = softmax_ce(labels, torch.cat([logits_ab, logits_aa], 1))
    loss_b = softmax_ce(labels, torch.cat([logits_ba, logits_bb], 1))
    return (loss_a + loss_b).mean()


def official_off_diagonal(x):
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def official_barlow(z1, z2, lambd):
    """BarlowTwins.forward after the projector: ``self.bn = BatchNorm1d(affine=False)`` in
    training mode, ``c = bn(z1).T @ bn(z2) / batch_size`` (the all-reduce: one process)."""
    bn = torch.nn.BatchNorm1d(z1.shape[1], affine=False).to(z1.dtype).train()
    c = bn(z1).T @ bn(z2)
    c = c / z1.shape[0]
    on_diag = torch.diagonal(c).add(-1).pow(2).sum()
    off_diag = official_off_diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag


def official_vicreg(x, y, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
    """VICReg.forward after the projector, in one process (FullGatherLayer: the identity)."""
    batch_size, num_features = x.shape
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (batch_size - 1)
    cov_y = (y.T @ y) / (batch_size - 1)
    cov_loss = official_off_diagonal(cov_x).pow(2).sum().div(num_features) + \
        official_off_diagonal(cov_y).pow(2).sum().div(num_features)
    return sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss


def embeddings(n=12, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    return z1, z1 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_is_the_official_contrastive_loss(temperature):
    z1, z2 = embeddings()
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    b1, b2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    ours, official = nt_xent(a1, a2, temperature), official_simclr(b1, b2, temperature)
    assert float(ours) == pytest.approx(float(official), rel=1e-10)
    ours.backward()
    official.backward()
    assert torch.allclose(a1.grad, b1.grad, atol=1e-10) and torch.allclose(a2.grad, b2.grad, atol=1e-10)


def test_nt_xent_for_one_pair_by_hand():
    """Two images, orthogonal views: each anchor's candidates are its positive (cos 0 here
    by construction of one pair) and the 2N - 2 = 2 others."""
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    # anchor 0 of view 1: positive cos 1, negatives z2[1] (cos 0) and z1[1] (cos 0)
    per_anchor = -torch.log(torch.exp(torch.tensor(1 / t)) / (torch.exp(torch.tensor(1 / t)) + 2))
    assert float(nt_xent(z1, z2, t)) == pytest.approx(2 * float(per_anchor), rel=1e-6)  # two directions summed


def test_negative_cosine_is_simsiams_criterion_with_a_stop_gradient():
    p, z = embeddings(seed=1)
    p.requires_grad_()
    z.requires_grad_()
    criterion = torch.nn.CosineSimilarity(dim=1)
    official = -criterion(p, z.detach()).mean()
    loss = negative_cosine(p, z)
    assert float(loss) == pytest.approx(float(official), rel=1e-12)
    loss.backward()
    assert z.grad is None and p.grad is not None


@pytest.mark.parametrize("lambd", [0.0051, 0.5])
def test_barlow_twins_loss_is_the_official_forward(lambd):
    z1, z2 = embeddings(n=16, d=5, seed=2)
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    b1, b2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    ours, parts = barlow_twins_loss(a1, a2, lambd)
    official = official_barlow(b1, b2, lambd)
    assert float(ours) == pytest.approx(float(official), rel=1e-10)
    assert float(parts["on_diagonal"] + lambd * parts["off_diagonal"]) == pytest.approx(float(ours), rel=1e-6)
    ours.backward()
    official.backward()
    assert torch.allclose(a1.grad, b1.grad, atol=1e-10) and torch.allclose(a2.grad, b2.grad, atol=1e-10)


def test_barlow_twins_loss_is_zero_for_decorrelated_identical_views():
    z = torch.linalg.qr(torch.randn(64, 4, dtype=torch.float64))[0] * 8  # orthogonal columns
    z = z - z.mean(0)
    z = torch.linalg.qr(z)[0] * 8  # centred and orthogonal: C = I up to BatchNorm's eps
    loss, _ = barlow_twins_loss(z, z, 0.0051)
    assert float(loss) < 1e-3


@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 3.0, 0.5)])
def test_vicreg_loss_is_the_official_forward(weights):
    z1, z2 = embeddings(n=16, d=5, seed=3)
    z1, z2 = 0.3 * z1, 0.3 * z2  # stds below 1, so the variance hinge is active
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    b1, b2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    ours, parts = vicreg_loss(a1, a2, *weights)
    official = official_vicreg(b1, b2, *weights)
    assert float(parts["variance"]) > 0
    assert float(ours) == pytest.approx(float(official), rel=1e-10)
    ours.backward()
    official.backward()
    assert torch.allclose(a1.grad, b1.grad, atol=1e-10) and torch.allclose(a2.grad, b2.grad, atol=1e-10)


# ---------------------------------------------------------------- two ranks
def global_batch():
    return embeddings(n=12, d=6, seed=4)


def on_ranks(rank, world_size):
    """Each loss on this rank's half of the global batch; its value and the gradient of the
    whole batch as DDP would leave it (the ranks' gradients averaged), assembled by rank."""
    z1, z2 = global_batch()
    half = z1.shape[0] // world_size
    out = {}
    losses = {"nt_xent": lambda a, b: nt_xent(a, b, 0.2),
              "barlow": lambda a, b: barlow_twins_loss(a, b, 0.1)[0],
              "vicreg": lambda a, b: vicreg_loss(0.3 * a, 0.3 * b)[0]}
    for name, loss_fn in losses.items():
        w = torch.nn.Parameter(torch.eye(6, dtype=torch.float64) + 0.1)  # a shared layer, as DDP syncs
        a, b = z1[rank * half:(rank + 1) * half], z2[rank * half:(rank + 1) * half]
        loss = loss_fn(a @ w, b @ w)
        loss.backward()
        grad, value = w.grad.clone(), loss.detach().clone()
        if world_size > 1:
            dist.all_reduce(grad)
            dist.all_reduce(value)
        out[name] = (float(value) / world_size, grad / world_size)
    x = torch.arange(6.0).view(3, 2) * (rank + 1)
    x.requires_grad_()
    gathered = gather_with_grad(x)
    (gathered * torch.arange(gathered.numel()).view_as(gathered)).sum().backward()
    out["gather"] = (gathered.detach(), x.grad)
    return out


@pytest.fixture(scope="module")
def two_ranks():
    return run_distributed(on_ranks, 2)


@pytest.mark.parametrize("name", ["nt_xent", "barlow", "vicreg"])
def test_two_ranks_equal_one_process_in_loss_and_gradient(two_ranks, name):
    single_value, single_grad = on_ranks(0, 1)[name]
    for ranked in two_ranks:
        value, grad = ranked[name]
        assert value == pytest.approx(single_value, rel=1e-9)
        assert torch.allclose(grad, single_grad, atol=1e-10)


def test_two_ranks_of_nt_xent_equal_the_official_cross_replica_loss(two_ranks):
    z1, z2 = global_batch()
    w = torch.eye(6, dtype=torch.float64) + 0.1
    official = sum(float(official_simclr(z1 @ w, z2 @ w, 0.2, replicas=2, replica_id=r)) for r in range(2)) / 2
    assert two_ranks[0]["nt_xent"][0] == pytest.approx(official, rel=1e-9)


def test_gather_with_grad_concatenates_in_rank_order_and_sums_gradients(two_ranks):
    parts = [torch.arange(6.0).view(3, 2) * (r + 1) for r in range(2)]
    expected = torch.cat(parts)
    weights = torch.arange(expected.numel(), dtype=torch.float32).view_as(expected)
    for rank, ranked in enumerate(two_ranks):
        gathered, grad = ranked["gather"]
        assert torch.equal(gathered, expected)
        # every rank's loss weights the gathered rows the same way: each rank's rows get 2 x
        assert torch.equal(grad, 2 * weights[rank * 3:(rank + 1) * 3])


def test_gather_with_grad_is_the_identity_in_one_process():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x
