import math

import pytest
import pytorch_lightning as pl
import torch

from helpers import tiny_byol, tiny_data, tiny_swav, tiny_trainer
from sslkit.augmentations import MultiCropViews




def views(n, sizes=(32, 32, 16, 16)):
    return [{"image": torch.randn(n, 3, s, s)} for s in sizes]


class RecordOnline(pl.Callback):
    def __init__(self):
        self.online = []

    def on_train_batch_end(self, trainer, module, *args):
        self.online.append([p.detach().clone() for p in module.backbone.parameters()])


def test_byol_target_is_the_ema_of_the_online_weights_with_tau_k(tmp_path):
    """After K steps the target equals the paper's recursion over the recorded online weights:
    xi_{k+1} = tau_k xi_k + (1 - tau_k) theta_{k+1}, tau_k = 1 - (1 - momentum)(cos(pi k / K) + 1) / 2
    (BYOL sec. 3.1; ``target_ema`` in byol/utils/schedules.py), starting from xi_0 = theta_0."""
    steps, momentum = 5, 0.5  # a low tau makes an off-by-one step visible
    model = tiny_byol(momentum=momentum)
    target = [p.detach().clone() for p in model.backbone.parameters()]
    recorder = RecordOnline()
    tiny_trainer(tmp_path, max_steps=steps, callbacks=[recorder]).fit(model, tiny_data())
    assert len(recorder.online) == steps
    for k, online in enumerate(recorder.online):
        tau = 1 - (1 - momentum) * (math.cos(math.pi * k / steps) + 1) / 2
        target = [tau * xi + (1 - tau) * theta for xi, theta in zip(target, online)]
    for expected, actual in zip(target, model.momentum_backbone.parameters()):
        assert torch.allclose(actual, expected, atol=1e-6)
    assert all(not p.requires_grad for p in model.momentum_backbone.parameters())


@pytest.mark.parametrize("accumulate, frozen", [(1, 2), (2, 1)])
def test_swav_prototypes_frozen_for_their_epochs_counted_in_optimiser_steps(tmp_path, accumulate, frozen):
    """64 images at batch 16: 4 batches an epoch, 4 optimiser steps (2 with accumulation 2);
    freeze_prototypes_epochs 0.5 freezes the prototypes for 2 (1) steps, then they train."""
    seen = []

    class Prototypes(pl.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            if (args[-1] + 1) % accumulate == 0:  # after an optimiser step
                seen.append(module.prototypes.weight.detach().clone())

    model = tiny_swav(queue_size=0, freeze_prototypes_epochs=0.5)
    trainer = tiny_trainer(tmp_path, max_steps=frozen + 1, accumulate_grad_batches=accumulate, callbacks=[Prototypes()])
    trainer.fit(model, tiny_data(num_train=64, batch_size=16))
    assert model.schedule.steps_per_epoch == 4 // accumulate and model.freeze_steps == frozen
    normalised = torch.nn.functional.normalize(seen[0], dim=1)
    assert all(torch.allclose(w, normalised, atol=1e-6) for w in seen[:frozen])  # renormalised only
    assert not torch.allclose(seen[frozen], normalised, atol=1e-4)  # the first step after: trained


def test_swav_groups_crops_by_resolution(monkeypatch):
    model = tiny_swav(queue_size=0)
    seen = []
    forward = model.backbone.forward
    monkeypatch.setattr(model.backbone, "forward", lambda x: seen.append(tuple(x.shape)) or forward(x))
    model.step(views(4, sizes=(32, 32, 16, 16, 16)))
    assert seen == [(8, 3, 32, 32), (12, 3, 16, 16)]


def test_swav_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="num_prototypes must be at least 2"):
        tiny_swav(num_prototypes=1)
    with pytest.raises(ValueError, match="queue_size=8 is shorter than the global batch"):
        tiny_trainer(tmp_path).fit(tiny_swav(queue_size=8), tiny_data())
    with pytest.raises(ValueError, match="RandomResizedCrop size 64 is larger"):
        tiny_trainer(tmp_path).fit(tiny_swav(augment=MultiCropViews(global_size=64, local_size=16)), tiny_data())
    model = tiny_swav(queue_size=0)
    bad = views(4)
    bad[0]["image"][0] = float("nan")
    with pytest.raises(FloatingPointError, match="global step 0"):
        model.step(bad)
