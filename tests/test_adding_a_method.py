"""docs/adding-a-method.md, run: its method (the spectral contrastive loss over the global batch,
with its own parameter groups), written on the method template, trains for two steps in Python
and through the CLI command the page shows; its loss is its formula, on two ranks too."""
import os
import re
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from helpers import invoke, tiny_data, tiny_trainer

PAGE = Path(REPO) / "docs" / "adding-a-method.md"


def page_files() -> dict[str, str]:
    """The files the page asks the reader to write: fenced blocks whose first line is
    ``# <file name>``."""
    files = {}
    for body in re.findall(r"```\w*\n(.*?)```", PAGE.read_text(), re.S):
        first = body.splitlines()[0]
        if re.fullmatch(r"# [\w.-]+\.(py|yaml)", first):
            files[first[2:]] = body
    return files


@pytest.fixture
def spectral(tmp_path, monkeypatch):
    for name, body in page_files().items():
        (tmp_path / name).write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("spectral", None)
    import spectral

    yield spectral
    sys.modules.pop("spectral", None)


def test_the_page_holds_a_complete_method_of_about_sixty_lines():
    files = page_files()
    assert set(files) == {"spectral.py", "spectral.yaml"}
    assert 40 <= len(files["spectral.py"].splitlines()) <= 70


def naive_spectral_loss(z1, z2):
    """HaoChen et al. 2021, eq. 5, by loops over the pairs."""
    n = len(z1)
    positive = sum(-2 * float(z1[i] @ z2[i]) for i in range(n)) / n
    negative = sum(float(z1[i] @ z2[j]) ** 2 for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return positive + negative


def test_spectral_loss_is_its_formula(spectral):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    assert float(spectral.spectral_contrastive_loss(z1, z2)) == pytest.approx(naive_spectral_loss(z1, z2), rel=1e-12)


def _two_ranks(rank, world_size, page):
    sys.path.insert(0, page)
    import spectral

    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(8, 4, generator=g, dtype=torch.float64)
    w = torch.nn.Parameter(torch.eye(4, dtype=torch.float64))
    half = 8 // world_size
    loss = spectral.spectral_contrastive_loss(z1[rank * half:(rank + 1) * half] @ w, z2[rank * half:(rank + 1) * half] @ w)
    loss.backward()
    grad = w.grad.clone()
    if world_size > 1:
        torch.distributed.all_reduce(grad)
        grad /= world_size
    return float(loss), grad


def test_spectral_loss_on_two_ranks_equals_one_process(spectral, tmp_path):
    from ddp import run_distributed

    ranks = run_distributed(_two_ranks, 2, str(tmp_path))
    one_loss, one_grad = _two_ranks(0, 1, str(tmp_path))
    # the first term is each rank's own mean, the second the global one: the mean over ranks is the whole batch's
    assert (ranks[0][0] + ranks[1][0]) / 2 == pytest.approx(one_loss, rel=1e-12)
    for _, grad in ranks:
        assert torch.allclose(grad, one_grad, atol=1e-12)


def test_spectral_trains_two_steps_with_its_parameter_groups(spectral, tmp_path):
    from sslkit.augmentations import MoCoV2Views
    from sslkit.methods import KNNConfig, OptimConfig

    model = spectral.Spectral(backbone="test_resnet", proj_hidden_dim=32, proj_output_dim=16, projector_lr_mult=10.0,
                              augment=MoCoV2Views(crop_size=32, blur_p=0.0), knn=KNNConfig(k=5),
                              optim=OptimConfig(lr=0.1, weight_decay=1e-3))
    before = [p.detach().clone() for p in model.backbone.parameters()]
    trainer = tiny_trainer(tmp_path, max_steps=2)
    trainer.fit(model, tiny_data())
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    assert groups["projector"]["lr"] == pytest.approx(10 * groups["backbone"]["lr"])
    assert groups["projector"]["weight_decay"] == 0.0 and groups["backbone"]["weight_decay"] == 1e-3
    assert 0.0 <= trainer.validate(model, tiny_data(), verbose=False)[0]["val/knn_top1"] <= 1.0
    trainer.save_checkpoint(tmp_path / "spectral.ckpt")  # the template saved its arguments: it rebuilds
    restored = spectral.Spectral.load_from_checkpoint(tmp_path / "spectral.ckpt")
    assert restored.hparams["projector_lr_mult"] == 10.0 and restored.backbone.name == "test_resnet"
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key


def test_spectral_trains_through_the_command_the_page_shows(spectral, tmp_path, capfd, monkeypatch):
    command = re.search(r"^sslkit fit .*spectral\.yaml$", PAGE.read_text(), re.M).group(0).split()[1:]
    command = [os.path.join(REPO, a) if a.startswith("configs/") else a for a in command]
    code, out, err = invoke([*command, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                             "--trainer.limit_val_batches=1", "--data.init_args.num_train=128",
                             "--data.init_args.num_val=64", "--data.init_args.batch_size=32",
                             "--trainer.enable_progress_bar=false"], tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    assert "finished 2 steps" in out + err
    assert list((tmp_path / "runs" / "demo+spectral").glob("version_*/checkpoints/last.ckpt"))
