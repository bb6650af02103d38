"""``sslkit spectrum``: eigenspectrum of a checkpoint's representation (SPEC §6).

    sslkit spectrum -c configs/linear_probe.yaml --source runs/demo/version_0/checkpoints/last.ckpt

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
from torch.utils.data import DataLoader, Subset

from sslkit.augmentations.recipes import eval_view
from sslkit.checkpoints import load_backbone, load_projector
from sslkit.eval.features import extract_features
from sslkit.eval.spectrum import eigenspectrum, plot_spectrum

from .common import add_source_arguments, resolve_device


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="sslkit spectrum", description=__doc__)
    add_source_arguments(parser)
    parser.add_argument("--split", type=str, default="val", help="val or train")
    parser.add_argument("--num_samples", type=int | None, default=None, help="first N images of the split")
    parser.add_argument("--fit_range", type=tuple[int, int] | None, default=None)
    parser.add_argument("--weighting", type=str, default="1/n", help="1/n or uniform")
    parser.add_argument("--out", type=str | None, default=None, help="folder (default: beside the checkpoint)")
    parser.add_argument("--device", type=str, default="auto")
    # options of the probe config that do not apply here are accepted and ignored
    for name, kind in (("protocol", str), ("l2_grid", list[float]), ("val_fraction", float), ("epochs", int),
                       ("lr", float), ("momentum", float), ("weight_decay", float), ("milestones", list[int]),
                       ("cache_dir", str | None), ("max_iter", int), ("nesterov", bool), ("backgrounds", bool)):
        parser.add_argument(f"--{name}", type=kind | None, default=None, help="(probe option, unused here)")
    return parser


class _Chain(nn.Module):
    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


def main(argv: list[str]) -> None:
    parser = build_parser()
    cfg = parser.parse_args(argv)
    init = parser.instantiate_classes(cfg)
    data = init.data
    data.setup("fit")
    dataset = {"val": data.val_set, "train": data.train_set}.get(init.split)
    if dataset is None:
        raise ValueError(f"--split must be val or train, got '{init.split}'")
    if init.num_samples is not None:
        dataset = Subset(dataset, range(min(init.num_samples, len(dataset))))
    device = resolve_device(init.device)
    backbone = load_backbone(init.source, init.arch, init.source_format).to(device)
    view = eval_view(init.crop_size, init.mean, init.std).to(device)
    loader = DataLoader(dataset, batch_size=data.batch_size, num_workers=getattr(data, "num_workers", 0))
    encoders = {"backbone": backbone}
    projector = load_projector(init.source) if Path(init.source).is_file() else None
    if projector is not None:
        encoders["projector"] = _Chain(backbone, projector.to(device)).eval()
    reports = {}
    for name, encoder in encoders.items():
        features, _ = extract_features(encoder, loader, lambda b: view(b)["image"], device, name)
        reports[name] = eigenspectrum(features, init.fit_range, init.weighting)
        print(f"{name:>9}: {reports[name].summary()}")
    out = Path(init.out) if init.out else (Path(init.source).parent if Path(init.source).is_file() else Path("."))
    out.mkdir(parents=True, exist_ok=True)
    (out / "spectrum.json").write_text(json.dumps({"source": init.source, "split": init.split,
                                                   **{k: r.to_dict() for k, r in reports.items()}}, indent=2))
    plot_spectrum(reports, str(out / "spectrum.png"), f"{Path(init.source).name}, {init.split} split")
    print(f"sslkit spectrum: wrote {out / 'spectrum.json'} and {out / 'spectrum.png'}")
