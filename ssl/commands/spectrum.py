"""``sslkit spectrum``: eigenspectrum of a checkpoint's representation.

    sslkit spectrum -c configs/linear_probe.yaml --ckpt_path runs/demo/version_0/checkpoints/last.ckpt

Features of the data module's val split (centre crop, no augmentation) from the backbone
and, where the method has one, from its projector; for each, alpha (power-law fit),
effective rank (RankMe) and participation ratio, written to ``spectrum.json`` with a
log-log plot ``spectrum.png`` beside the checkpoint (or in ``--out``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from jsonargparse import ArgumentParser
from torch import nn
from torch.utils.data import Subset

from sslkit.checkpoints import load_projector
from sslkit.eval.features import extract_features
from sslkit.eval.plots import plot_spectrum
from sslkit.eval.spectrum import eigenspectrum

from .common import add_source_arguments, checkpoint_backbone, eval_view_of, prepared_data, renamed, resolve_device


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="sslkit spectrum", description=__doc__)
    add_source_arguments(parser)
    parser.add_argument("--split", type=str, default="val", help="val or train")
    parser.add_argument("--num_samples", type=int | None, default=None, help="first N images of the split")
    parser.add_argument("--fit_range", type=tuple[int, int] | None, default=None)
    parser.add_argument("--weighting", type=str, default="1/n", help="1/n or uniform")
    parser.add_argument("--out", type=str | None, default=None, help="folder (default: beside the checkpoint)")
    parser.add_argument("--device", type=str, default="auto")
    return parser


def probe_config_shared(argv: list[str], parser: ArgumentParser) -> list[str]:
    """A probe config (``configs/linear_probe*.yaml``) names the data and the view for both
    commands; its probe-only options are left out here, so spectrum declares only its own."""
    import yaml

    accepted = {key.split(".")[0] for key in parser.get_defaults().keys()}
    out, i = [], 0
    while i < len(argv):
        if argv[i] in ("-c", "--config") and i + 1 < len(argv) and Path(argv[i + 1]).is_file():
            values = yaml.safe_load(Path(argv[i + 1]).read_text()) or {}
            out += ["--config", yaml.safe_dump({k: v for k, v in values.items() if k in accepted})]
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


class _Chain(nn.Module):
    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


def parse(argv: list[str]):
    """The command line with its data module built (nothing read yet)."""
    parser = build_parser()
    return parser.instantiate_classes(parser.parse_args(probe_config_shared(renamed(argv), parser)))


def main(argv: list[str]) -> None:
    run(parse(argv))


def run(init) -> None:
    device = resolve_device(init.device)
    data = prepared_data(init.data, device)
    if init.split not in ("val", "train"):
        raise ValueError(f"--split must be val or train, got '{init.split}'")
    dataset = data.eval_split(init.split)
    if init.num_samples is not None:
        dataset = Subset(dataset, range(min(init.num_samples, len(dataset))))
    backbone = checkpoint_backbone(init).to(device)
    view = eval_view_of(init, data).to(device)
    loader = data.eval_loader(dataset)
    encoders = {"backbone": backbone}
    projector = load_projector(init.ckpt_path) if Path(init.ckpt_path).is_file() else None
    if projector is not None:  # the projector takes the features it was trained on, whatever --features says
        trained = backbone
        if init.get("features") or init.get("last_n"):
            recorded = init.clone()
            recorded.features, recorded.last_n = None, None
            trained = checkpoint_backbone(recorded).to(device)
        encoders["projector"] = _Chain(trained, projector.to(device)).eval()
    reports = {}
    for name, encoder in encoders.items():
        features, _ = extract_features(encoder, loader, lambda b: view(b)["image"], device, name,
                                       prepare=data.prepare)
        reports[name] = eigenspectrum(features, init.fit_range, init.weighting)
        print(f"{name:>9}: {reports[name].summary()}")
    out = Path(init.out) if init.out else (Path(init.ckpt_path).parent if Path(init.ckpt_path).is_file() else Path("."))
    out.mkdir(parents=True, exist_ok=True)
    (out / "spectrum.json").write_text(json.dumps({"ckpt_path": init.ckpt_path, "branch": init.branch, "split": init.split,
                                                   **{k: r.to_dict() for k, r in reports.items()}}, indent=2))
    plot_spectrum(reports, str(out / "spectrum.png"), f"{Path(init.ckpt_path).name}, {init.split} split")
    print(f"sslkit spectrum: wrote {out / 'spectrum.json'} and {out / 'spectrum.png'}")
