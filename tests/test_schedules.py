"""Learning-rate schedules against the official code, rewritten here from its source:
SwAV's ``main_swav.py`` (numpy arrays), solo-learn's ``LinearWarmupCosineAnnealingLR``
(``solo/utils/lr_scheduler.py``, stepped recursively as Lightning steps it), BYOL's
``byol/utils/schedules.py`` and MoCo's ``main_moco.py`` ``adjust_learning_rate``."""
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from helpers import tiny_data, tiny_moco, tiny_swav
from sslkit.methods.optim import OptimConfig, lr_at


def swav_schedule(base_lr, final_lr, start_warmup, warmup_epochs, epochs, iters_per_epoch):
    """main_swav.py, lines building ``lr_schedule``."""
    warmup = np.linspace(start_warmup, base_lr, iters_per_epoch * warmup_epochs)
    iters = np.arange(iters_per_epoch * (epochs - warmup_epochs))
    cosine = np.array([final_lr + 0.5 * (base_lr - final_lr) *
                       (1 + math.cos(math.pi * t / (iters_per_epoch * (epochs - warmup_epochs)))) for t in iters])
    return np.concatenate((warmup, cosine))


class SoloWarmupCosine(torch.optim.lr_scheduler.LRScheduler):
    """solo/utils/lr_scheduler.py ``LinearWarmupCosineAnnealingLR.get_lr`` (the chained form
    Lightning uses)."""

    def __init__(self, optimizer, warmup_epochs, max_epochs, warmup_start_lr=0.0, eta_min=0.0):
        self.warmup_epochs, self.max_epochs = warmup_epochs, max_epochs
        self.warmup_start_lr, self.eta_min = warmup_start_lr, eta_min
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch == 0:
            return [self.warmup_start_lr] * len(self.base_lrs)
        if self.last_epoch < self.warmup_epochs:
            return [g["lr"] + (b - self.warmup_start_lr) / (self.warmup_epochs - 1)
                    for b, g in zip(self.base_lrs, self.optimizer.param_groups)]
        if self.last_epoch == self.warmup_epochs:
            return self.base_lrs
        span = self.max_epochs - self.warmup_epochs
        if (self.last_epoch - 1 - self.max_epochs) % (2 * span) == 0:
            return [g["lr"] + (b - self.eta_min) * (1 - math.cos(math.pi / span)) / 2
                    for b, g in zip(self.base_lrs, self.optimizer.param_groups)]
        return [(1 + math.cos(math.pi * (self.last_epoch - self.warmup_epochs) / span))
                / (1 + math.cos(math.pi * (self.last_epoch - self.warmup_epochs - 1) / span))
                * (g["lr"] - self.eta_min) + self.eta_min for g in self.optimizer.param_groups]


def byol_schedule(step, batch_size, base_learning_rate, total_steps, warmup_steps):
    """byol/utils/schedules.py ``learning_schedule``."""
    scaled_lr = base_learning_rate * batch_size / 256.0
    if step < warmup_steps:
        return step / warmup_steps * scaled_lr
    t = min(step - warmup_steps, total_steps - warmup_steps)
    return scaled_lr * 0.5 * (1 + math.cos(math.pi * t / (total_steps - warmup_steps)))


@pytest.mark.parametrize("recipe", [(4.8, 0.0048, 0.3, 10, 800, 312), (0.6, 0.0006, 0.0, 0, 400, 50)])
def test_lr_at_equals_main_swav_schedule(recipe):
    base, final, start, warmup_epochs, epochs, iters = recipe
    reference = swav_schedule(base, final, start, warmup_epochs, epochs, iters)
    ours = [lr_at(i, epochs * iters, warmup_epochs * iters, base, start, final) for i in range(len(reference))]
    assert np.allclose(ours, reference, rtol=1e-12, atol=1e-12)


def test_lr_at_equals_solo_learn_warmup_cosine():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    total, warmup = 1950, 195
    scheduler = SoloWarmupCosine(optimizer, warmup, total, warmup_start_lr=3e-5, eta_min=0.0)
    reference = []
    for _ in range(total):
        reference.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    ours = [lr_at(i, total, warmup, 1.0, 3e-5, 0.0) for i in range(total)]
    assert np.allclose(ours, reference, rtol=1e-9, atol=1e-12)


def test_lr_at_equals_byol_schedule_when_warmup_peaks_on_the_first_cosine_step():
    total, warmup = 3000, 300
    reference = [byol_schedule(i, 4096, 0.2, total, warmup) for i in range(total)]
    ours = [lr_at(i, total, warmup, 0.2 * 4096 / 256, 0.0, 0.0, warmup_ends_at_peak=False) for i in range(total)]
    assert np.allclose(ours, reference, rtol=1e-12, atol=1e-12)


class RecordLR(pl.Callback):
    def __init__(self):
        self.lrs, self.epoch_lrs = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_start(self, trainer, module):
        self.epoch_lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def fit_recording(model, data, epochs):
    recorder = RecordLR()
    pl.Trainer(max_epochs=epochs, limit_val_batches=0, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
               callbacks=[recorder]).fit(model, data)
    return recorder


def test_swav_trains_on_main_swav_schedule_per_iteration():
    optim = OptimConfig(name="lars", lr=4.8, lr_scaling="none", weight_decay=1e-6, trust_ratio="larc",
                        warmup_epochs=1, warmup_start_lr=0.3, final_lr=0.0048)
    model = tiny_swav(queue_size=0, optim=optim)
    data = tiny_data(num_train=64, batch_size=16)  # 4 iterations per epoch
    recorder = fit_recording(model, data, epochs=3)
    reference = swav_schedule(4.8, 0.0048, 0.3, 1, 3, 4)
    assert np.allclose(recorder.lrs, reference, rtol=1e-9)


def test_mocov2_default_changes_lr_once_per_epoch_as_main_moco():
    model = tiny_moco(optim=OptimConfig(lr=0.03, schedule_interval="epoch"), batchnorm="plain")
    data = tiny_data(num_train=64, batch_size=16)
    recorder = fit_recording(model, data, epochs=4)
    lr = 0.03 * 16 / 256
    expected = [lr * 0.5 * (1 + math.cos(math.pi * epoch / 4)) for epoch in range(4)]  # main_moco.py, --cos
    assert np.allclose(recorder.epoch_lrs, expected, rtol=1e-9)
    assert np.allclose(recorder.lrs, np.repeat(expected, 4), rtol=1e-9)
