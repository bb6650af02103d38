"""docs/adding-a-method.md, run: its SimSiam, written on the method template, trains for two
steps in Python and through the CLI command the page shows, and its loss is SimSiam's."""
import math
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
def simsiam(tmp_path, monkeypatch):
    for name, body in page_files().items():
        (tmp_path / name).write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("simsiam", None)
    import simsiam

    yield simsiam
    sys.modules.pop("simsiam", None)


def test_the_page_holds_a_complete_method_of_about_sixty_lines():
    files = page_files()
    assert set(files) == {"simsiam.py", "simsiam.yaml"}
    assert 40 <= len(files["simsiam.py"].splitlines()) <= 70


def test_simsiam_loss_is_the_negative_cosine_with_a_stop_gradient(simsiam):
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    z = torch.tensor([[1.0, 1.0], [0.0, -3.0]], requires_grad=True)
    loss = simsiam.simsiam_loss(p, z)
    assert math.isclose(float(loss), -(1 / math.sqrt(2) - 1) / 2, rel_tol=1e-6)  # mean of -cos: 1/sqrt(2) and -1
    loss.backward()
    assert z.grad is None and p.grad is not None  # no gradient into the target


def test_simsiam_trains_two_steps_on_the_template(simsiam, tmp_path):
    from sslkit.augmentations import MoCoV2Views
    from sslkit.methods import KNNConfig

    model = simsiam.SimSiam(backbone="test_resnet", proj_dim=64, pred_hidden_dim=16,
                            augment=MoCoV2Views(crop_size=32, blur_p=0.0), knn=KNNConfig(k=5))
    before = [p.detach().clone() for p in model.backbone.parameters()]
    trainer = tiny_trainer(tmp_path, max_steps=2)
    trainer.fit(model, tiny_data())
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))
    assert 0.0 <= trainer.validate(model, tiny_data(), verbose=False)[0]["val/knn_top1"] <= 1.0
    trainer.save_checkpoint(tmp_path / "simsiam.ckpt")  # the template saved its arguments: it rebuilds
    restored = simsiam.SimSiam.load_from_checkpoint(tmp_path / "simsiam.ckpt")
    assert restored.hparams["proj_dim"] == 64 and restored.backbone.name == "test_resnet"
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key


def test_simsiam_trains_through_the_command_the_page_shows(simsiam, tmp_path, capfd, monkeypatch):
    command = re.search(r"^sslkit fit .*simsiam\.yaml$", PAGE.read_text(), re.M).group(0).split()[1:]
    command = [os.path.join(REPO, a) if a.startswith("configs/") else a for a in command]
    code, out, err = invoke([*command, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                             "--trainer.limit_val_batches=1", "--data.init_args.num_train=128",
                             "--data.init_args.num_val=64", "--data.init_args.batch_size=32",
                             "--trainer.enable_progress_bar=false"], tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    assert "finished 2 steps" in out + err
    assert list((tmp_path / "runs" / "demo+simsiam").glob("version_*/checkpoints/last.ckpt"))
