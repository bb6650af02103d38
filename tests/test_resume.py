"""An interrupted run resumed from its checkpoint ends exactly where an uninterrupted one
does: parameters, queue, target network, optimiser and scheduler state, data order."""
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from helpers import tiny_byol, tiny_data, tiny_moco


class StopAt(pl.Callback):
    """What a kill after step ``step`` leaves: the run stops right after that step's checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def fit(tmp_path, build, max_steps, ckpt_path=None, every=None):
    pl.seed_everything(7)
    model = build()
    callbacks = [ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=every, save_top_k=-1),
                 StopAt(every)] if every else []
    trainer = pl.Trainer(default_root_dir=str(tmp_path), max_steps=max_steps, logger=False, accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                         callbacks=callbacks, enable_checkpointing=bool(every), num_sanity_val_steps=0)
    trainer.fit(model, tiny_data(), ckpt_path=ckpt_path)
    return model, trainer


@pytest.mark.parametrize("build", [tiny_moco, tiny_byol], ids=["moco", "byol"])
def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path, build):
    n = 6  # 4 batches per epoch: the interruption falls in the middle of epoch 2
    whole, whole_trainer = fit(tmp_path / "whole", build, 2 * n)
    first, _ = fit(tmp_path / "first", build, 2 * n, every=n)
    assert first.trainer.global_step == n
    ckpt = next((tmp_path / "first").glob("*step=6.ckpt"))
    resumed, resumed_trainer = fit(tmp_path / "second", build, 2 * n, ckpt_path=str(ckpt))
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    opt_a = whole_trainer.optimizers[0].state_dict()["state"]
    opt_b = resumed_trainer.optimizers[0].state_dict()["state"]
    for index in opt_a:
        for name, value in opt_a[index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b[index][name])), (index, name)
    assert whole_trainer.lr_scheduler_configs[0].scheduler.state_dict() == \
        resumed_trainer.lr_scheduler_configs[0].scheduler.state_dict()
    assert whole_trainer.global_step == resumed_trainer.global_step == 2 * n
