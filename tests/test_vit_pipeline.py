"""ViTs through the pipeline: which features a ViT gives (DINO's linear protocol rebuilt from
``eval_linear.py``), crops of any size, and every evaluator on a ViT checkpoint trained from
the CLI (GeometryMonitor, kNN, probe, spectrum, report, landscape with both Hessian-vector
engines through attention)."""
import json
import os

import pytest
import torch
import yaml

from conftest import REPO
from helpers import TINY_VIT, invoke, tiny_data, tiny_mocov3
from sslkit.nn.backbones import build_backbone


def tiny_vit(**kwargs):
    torch.manual_seed(0)
    return build_backbone(TINY_VIT["name"], **TINY_VIT["kwargs"], **kwargs).eval()


def dino_intermediate_layers(model, x, n):
    """DINO ``vision_transformer.py`` ``get_intermediate_layers``: the outputs of the last ``n``
    blocks, each through the final norm."""
    x = model.patch_embed(x)
    x = model._pos_embed(x)
    x = model.norm_pre(x)
    output = []
    for i, blk in enumerate(model.blocks):
        x = blk(x)
        if len(model.blocks) - i <= n:
            output.append(model.norm(x))
    return output


def test_cls_avgpool_and_dino_linear_protocol_features():
    x = torch.randn(3, 3, 32, 32)
    cls, avg, last = tiny_vit(), tiny_vit(features="avgpool"), tiny_vit(features="last_n_cls", last_n=2)
    with torch.no_grad():
        tokens = cls.model.forward_features(x)
        assert torch.allclose(cls(x), tokens[:, 0], atol=1e-6) and cls.dim == 32
        assert torch.allclose(avg(x), tokens[:, 1:].mean(1), atol=1e-6)
        layers = dino_intermediate_layers(last.model, x, 2)  # eval_linear.py: cat of x[:, 0] over them
        assert torch.allclose(last(x), torch.cat([t[:, 0] for t in layers], dim=-1), atol=1e-5)
    assert last.dim == 64 and last(x).shape == (3, 64)


def test_feature_choices_are_checked():
    with pytest.raises(ValueError, match="needs a timm Vision Transformer"):
        build_backbone("test_resnet", features="cls")
    with pytest.raises(ValueError, match="last_n must be 1-2"):
        tiny_vit(features="last_n_cls", last_n=3)
    with pytest.raises(ValueError, match="must be one of"):
        tiny_vit(features="mean")


def test_crops_of_any_size_go_through_with_the_position_embedding_interpolated():
    model = tiny_vit()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 32)
        assert model(torch.randn(2, 3, 48, 40)).shape == (2, 32)
        fixed = build_backbone(TINY_VIT["name"], **TINY_VIT["kwargs"], dynamic_img_size=False).eval()
        fixed.load_state_dict(model.state_dict())
        x = torch.randn(2, 3, 32, 32)
        assert torch.allclose(fixed(x), model(x), atol=1e-6)  # at its own size, nothing is resampled


def test_both_hessian_engines_agree_through_attention():
    """The fused attention kernels have no second derivative; the landscape runs attention
    through the math kernel, and double-backward and forward-over-reverse give one spectrum."""
    from sslkit.eval.landscape import top_eigenvalues
    from sslkit.eval.objectives import method_closures, trained_blocks

    torch.manual_seed(0)
    model = tiny_mocov3().train()
    data = tiny_data(batch_size=8)
    data.setup("fit")
    batch = next(iter(data.eval_loader(data.eval_split("train"))))
    params = [p for group in trained_blocks(model).values() for p in group]
    assert any(name.startswith("backbone.blocks") for name in trained_blocks(model))
    found = [top_eigenvalues(method_closures(model, [batch]), params, k=1, tol=1e-5, model=model, hvp=hvp).eigenvalues
             for hvp in ("double-backward", "forward-over-reverse")]
    assert torch.allclose(found[0], found[1], rtol=1e-4)
    assert found[0][0] > 0


def monitor(tmp_path):
    """An overlay whose GeometryMonitor measures after every epoch, on a small subset."""
    path = tmp_path / "monitor.yaml"
    path.write_text("trainer:\n  callbacks:\n"
                    "    - {class_path: pytorch_lightning.callbacks.ModelCheckpoint, init_args: {save_last: true}}\n"
                    "    - {class_path: sslkit.eval.GeometryMonitor, init_args: {every_n_epochs: 1, num_samples: 64, "
                    "bank_size: 96}}\n")
    return path


FEATURES = ["--model.init_args.backbone.features=last_n_cls", "--model.init_args.backbone.last_n=2"]
SMALL = ["--data.init_args.num_train=96", "--data.init_args.num_val=64", "--data.init_args.batch_size=32"]


def test_every_evaluator_runs_on_a_vit_checkpoint(tmp_path, capfd, monkeypatch):
    """The MoCo v3 demo (tiny ViT) fitted from the CLI with DINO's linear-protocol features
    (last 2 class tokens): GeometryMonitor, kNN and the online classifier during training;
    then probe, spectrum, report and landscape on its checkpoint, each on the recorded
    features (2 x the demo ViT's width)."""
    width = yaml.safe_load(open(os.path.join(REPO, "configs", "demo_mocov3.yaml")))["model"]["init_args"]["backbone"]["kwargs"]["embed_dim"]
    demo, overlay = os.path.join(REPO, "configs", "demo.yaml"), os.path.join(REPO, "configs", "demo_mocov3.yaml")
    code, _, err = invoke(["fit", "-c", demo, "-c", overlay, *SMALL, "--trainer.max_epochs=1",
                           "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false",
                           *FEATURES, "-c", monitor(tmp_path)], tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    run = next((tmp_path / "runs").glob("*/version_*"))
    ckpt = run / "checkpoints" / "last.ckpt"
    logged = (run / "metrics.csv").read_text()
    assert "val/knn_top1" in logged and "val/effective_rank" in logged
    probe = os.path.join(REPO, "configs", "linear_probe.yaml")
    common = [*SMALL, "--data.init_args.saturation=0.0"]
    code, _, err = invoke(["probe", "-c", probe, "--ckpt_path", ckpt, *common, "--l2_grid=[0.01]"],
                          tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    assert 0.0 <= json.loads((ckpt.parent / "probe_fast.json").read_text())["top1"] <= 1.0
    code, _, err = invoke(["spectrum", "-c", probe, "--ckpt_path", ckpt, *common], tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    spectrum = json.loads((ckpt.parent / "spectrum.json").read_text())
    assert spectrum["backbone"]["dim"] == 2 * width
    code, _, err = invoke(["spectrum", "-c", probe, "--ckpt_path", ckpt, *common, "--features=cls", "--out",
                           tmp_path / "cls"], tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    assert json.loads((tmp_path / "cls" / "spectrum.json").read_text())["backbone"]["dim"] == width
    code, _, err = invoke(["landscape", "-c", demo, "-c", overlay, "--ckpt_path", ckpt, "--batches", "1",
                           "--trace_samples", "4", "--density_probes", "2", "--lanczos_steps", "6", "--tol", "0.01",
                           *SMALL, *FEATURES], tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    record = json.loads((ckpt.parent / "landscape.json").read_text())
    assert record["top_eigenvalues"][0] > 0 and "backbone.blocks.0" in record["by_block"]
    code, _, err = invoke(["report", "-c", probe, "--ckpt_path", ckpt, "--out", tmp_path / "report", *common,
                           "--l2_grid=[0.01]"], tmp_path, capfd, monkeypatch)
    assert code == 0, err[-3000:]
    card = json.loads((tmp_path / "report" / "report.json").read_text())["checkpoints"][0]
    assert card["hessian_top"] == record["top_eigenvalues"][0]


def test_the_fsdp_overlay_parses_and_wraps_each_transformer_block(capfd, monkeypatch, tmp_path):
    """``configs/fsdp_vit_large.yaml`` resolves to Lightning's FSDP strategy with sslkit's
    block policy, which wraps exactly the transformer blocks (FSDP itself needs GPUs)."""
    from pytorch_lightning.strategies import FSDPStrategy
    from timm.models.vision_transformer import Block

    from sslkit.nn.vits import transformer_block_policy

    vit_small = os.path.join(REPO, "configs", "mocov3_vit_small_imagenet.yaml")
    fsdp = os.path.join(REPO, "configs", "fsdp_vit_large.yaml")
    code, out, err = invoke(["fit", "-c", vit_small, "-c", fsdp, "--print_config"], tmp_path, capfd, monkeypatch)
    assert code == 0, err[-2000:]
    assert "pytorch_lightning.strategies.FSDPStrategy" in out and "name: vit_large_patch16_224" in out
    assert "auto_wrap_policy: sslkit.nn.vits.transformer_block_policy" in out
    model = tiny_vit().model
    wrapped = [m for m in model.modules() if transformer_block_policy(m, False, 0)]
    assert len(wrapped) == len(model.blocks) and all(isinstance(m, Block) for m in wrapped)
    assert transformer_block_policy(model, True, 0)
    FSDPStrategy(auto_wrap_policy=transformer_block_policy, activation_checkpointing_policy=transformer_block_policy)
