import pytest
import pytorch_lightning as pl
import torch

from helpers import tiny_data, tiny_moco, tiny_trainer
from sslkit.methods.speed import SpeedConfig, compiler_available


class BackboneInputs(pl.Callback):
    """What the online backbone receives and returns during training steps."""

    def on_fit_start(self, trainer, module):
        self.inputs, self.outputs = [], []
        module.backbone.register_forward_hook(self._record)

    def _record(self, backbone, args, output):
        if backbone.training:
            self.inputs.append(args[0].detach())
            self.outputs.append(output.detach())


def test_channels_last_trains_with_nhwc_weights_and_views(tmp_path):
    model, seen = tiny_moco(speed=SpeedConfig(channels_last=True)), BackboneInputs()
    tiny_trainer(tmp_path, max_steps=2, callbacks=[seen]).fit(model, tiny_data())
    conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert len(seen.inputs) == 2  # the views of both steps arrive in NHWC
    assert all(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() for x in seen.inputs)
    assert torch.isfinite(model.trainer.callback_metrics["train/loss"])


def test_compile_compiles_the_encoders_and_keeps_checkpoint_keys(tmp_path):
    """A backend that records the graphs it is given: compilation happened, for the backbone."""
    from torch._dynamo import register_backend

    reason = compiler_available(torch.device("cpu"), "eager")
    if reason:
        pytest.skip(reason)
    graphs = []

    @register_backend(name="sslkit_test_recording")
    def recording(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    model = tiny_moco(speed=SpeedConfig(compile=True, compile_backend="sslkit_test_recording"))
    keys = set(tiny_moco().state_dict())
    tiny_trainer(tmp_path, max_steps=2).fit(model, tiny_data())
    assert graphs and "conv2d" in "".join(graph.code for graph in graphs)  # the backbone's convolutions
    assert set(model.state_dict()) == keys  # compiled in place: no _orig_mod. prefixes
    assert torch.isfinite(model.trainer.callback_metrics["train/loss"])


@pytest.mark.parametrize("precision, dtype", [("bf16-mixed", torch.bfloat16), ("32", torch.float32)])
def test_precision_settings_are_honoured_on_cpu(tmp_path, precision, dtype):
    model, seen = tiny_moco(), BackboneInputs()
    tiny_trainer(tmp_path, max_steps=2, precision=precision, callbacks=[seen]).fit(model, tiny_data())
    assert seen.outputs and all(y.dtype == dtype for y in seen.outputs)  # autocast around the step
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32 (mixed)
    assert torch.isfinite(model.trainer.callback_metrics["train/loss"])


def test_missing_compiler_is_named(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "C++ compiler" in compiler_available(torch.device("cpu"), "inductor")
