import pytest
import torch

from helpers import tiny_data, tiny_moco, tiny_trainer
from sslkit.methods.speed import SpeedConfig, compiler_available


def test_channels_last_trains_with_nhwc_weights_and_views(tmp_path):
    model = tiny_moco(speed=SpeedConfig(channels_last=True))
    tiny_trainer(tmp_path, max_steps=2).fit(model, tiny_data())
    conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(model.trainer.callback_metrics["train/loss"])


def test_compile_runs_on_cpu_and_keeps_checkpoint_keys(tmp_path):
    reason = compiler_available(torch.device("cpu"), "eager")
    if reason:
        pytest.skip(reason)
    model = tiny_moco(speed=SpeedConfig(compile=True, compile_backend="eager"))
    keys = set(tiny_moco().state_dict())
    tiny_trainer(tmp_path, max_steps=2).fit(model, tiny_data())
    assert set(model.state_dict()) == keys  # compiled in place: no _orig_mod. prefixes
    assert torch.isfinite(model.trainer.callback_metrics["train/loss"])


@pytest.mark.parametrize("precision", ["bf16-mixed", "32"])
def test_precision_settings_run_on_cpu(tmp_path, precision):
    model = tiny_moco()
    tiny_trainer(tmp_path, max_steps=2, precision=precision).fit(model, tiny_data())
    assert torch.isfinite(model.trainer.callback_metrics["train/loss"])


def test_missing_compiler_is_named(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "C++ compiler" in compiler_available(torch.device("cpu"), "inductor")
