"""``sslkit report``: checkpoints judged by every instrument, side by side.

    sslkit report -c configs/linear_probe.yaml --ckpt_path A.ckpt B.ckpt --out DIR
    sslkit report -c configs/linear_probe.yaml --ckpt_path A.ckpt moco_v2_800ep_pretrain.pth.tar --names ours moco

Each checkpoint (any format ``load_backbone`` reads) is encoded once per split, under the
evaluation view of the probe config, and every instrument reads those cached features: the
linear probe (top-1, top-5), weighted kNN, the eigenspectrum (alpha, effective rank,
participation ratio) and, where the data has masks, the Backgrounds Challenge with BG-Gap.
Where a checkpoint's run folder has a ``metrics.csv`` (``sslkit fit``'s logs), its last
``val/online_top1`` and its curves by epoch join it, and a ``landscape.json`` beside it
(``sslkit landscape``) adds the loss-landscape numbers. Writes ``DIR/report.json`` and
``DIR/report.md`` with the figures (``spectra.png``, ``backgrounds.png``, ``curves.png``).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

from jsonargparse import ArgumentParser

from sslkit.eval.card import report_card
from sslkit.eval.plots import plot_report_backgrounds, plot_report_curves, plot_report_spectra

from .common import add_source_arguments, checkpoint_backbone, feature_source, prepared_data, renamed, resolve_device

CURVES = ("val/knn_top1", "val/online_top1", "val/alpha", "val/effective_rank")
COLUMNS = [("probe_top1", "probe top-1", 100), ("probe_top5", "probe top-5", 100),
           ("probe_train_top1", "probe train top-1", 100), ("probe_gap", "probe gap (train - test)", 100),
           ("knn_top1", "kNN top-1", 100),
           ("online_top1", "online top-1", 100), ("alpha", "alpha", 1), ("effective_rank", "effective rank", 1),
           ("participation_ratio", "participation ratio", 1), ("bg_gap", "BG-Gap", 100),
           ("hessian_top", "Hessian top", 1), ("hessian_trace", "Hessian trace", 1)]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="sslkit report", description=__doc__)
    add_source_arguments(parser, many=True)
    parser.add_argument("--names", type=str, nargs="+", default=None, help="a name per checkpoint (default: derived)")
    parser.add_argument("--out", type=str, default="runs/report", help="folder for report.json, report.md, figures")
    parser.add_argument("--l2_grid", type=list[float], default=[1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    parser.add_argument("--val_fraction", type=float, default=0.2)
    parser.add_argument("--max_iter", type=int, default=500)
    parser.add_argument("--knn_k", type=int, default=20)
    parser.add_argument("--knn_temperature", type=float, default=0.07)
    parser.add_argument("--fit_range", type=tuple[int, int] | None, default=None)
    parser.add_argument("--backgrounds", type=bool | None, default=None,
                        help="the Backgrounds Challenge (default: where the data has masks)")
    parser.add_argument("--cache_dir", type=str | None, default="runs/probe_cache")
    parser.add_argument("--device", type=str, default="auto")
    return parser


def parse(argv: list[str]):
    """The command line with its data module built (nothing read yet). A probe config names
    the data and the view; its probe-only options (``protocol``, ``epochs``, ...) are left out."""
    from .spectrum import probe_config_shared

    parser = build_parser()
    init = parser.instantiate_classes(parser.parse_args(probe_config_shared(renamed(argv), parser)))
    if init.names is not None and len(init.names) != len(init.ckpt_path):
        raise ValueError(f"--names gives {len(init.names)} names for {len(init.ckpt_path)} checkpoints")
    return init


def default_names(paths: list[str]) -> list[str]:
    """Short distinct names: a run's folder (``runs/NAME/version_N/checkpoints/x.ckpt``) or the
    file's stem, numbered where two would be the same."""
    names = []
    for path in paths:
        p = Path(path)
        name = p.parent.parent.parent.name if p.parent.name == "checkpoints" and p.parent.parent.name.startswith(
            "version_") else p.stem
        names.append(name)
    return [f"{n} ({i + 1})" if names.count(n) > 1 else n for i, n in enumerate(names)]


def run_logs(ckpt_path: str) -> dict:
    """What the checkpoint's run logged (``metrics.csv`` next to its ``checkpoints`` folder):
    the last ``val/online_top1`` and the curves of ``CURVES`` by epoch; ``{}`` without logs."""
    folder = Path(ckpt_path).parent.parent
    metrics = folder / "metrics.csv"
    if not metrics.is_file():
        return {}
    curves: dict[str, dict[int, float]] = {}
    with open(metrics) as f:
        for row in csv.DictReader(f):
            for key in CURVES:
                if row.get(key) not in (None, "") and row.get("epoch") not in (None, ""):
                    curves.setdefault(key, {})[int(float(row["epoch"]))] = float(row[key])
    out = {"run": str(folder), "curves": {k: [[e, v] for e, v in sorted(c.items())] for k, c in curves.items()}}
    if curves.get("val/online_top1"):
        out["online_top1"] = out["curves"]["val/online_top1"][-1][1]
    return out


def landscape_numbers(ckpt_path: str) -> dict:
    """The top Hessian eigenvalue and trace of ``sslkit landscape``, where its
    ``landscape.json`` lies beside the checkpoint."""
    path = Path(ckpt_path).with_name("landscape.json")
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    return {"hessian_top": record["top_eigenvalues"][0], "hessian_trace": record["trace"],
            "hessian_trace_stderr": record.get("trace_stderr")}


def run(init) -> None:
    device = resolve_device(init.device)
    data = prepared_data(init.data, device)
    backgrounds = data.has_masks if init.backgrounds is None else init.backgrounds
    out = Path(init.out)
    out.mkdir(parents=True, exist_ok=True)
    names = init.names or default_names(init.ckpt_path)
    cards = []
    for number, (name, path) in enumerate(zip(names, init.ckpt_path), 1):
        print(f"sslkit report: [{number}/{len(names)}] {name}", flush=True)
        init_one = _with_path(init, path)
        backbone = checkpoint_backbone(init_one).to(device)
        source = feature_source(init_one, backbone, data, device, init.cache_dir)
        card = report_card(source, init.l2_grid, init.val_fraction, init.max_iter, init.knn_k, init.knn_temperature,
                           backgrounds, init.fit_range)
        cards.append({"name": name, "ckpt_path": path, "branch": init.branch, **card, **run_logs(path),
                      **landscape_numbers(path)})
    record = {"data": type(data).__name__, "crop_size": init.crop_size, "checkpoints": cards}
    (out / "report.json").write_text(json.dumps(record, indent=2))
    figures = write_figures(cards, out)
    (out / "report.md").write_text(markdown(cards, figures, type(data).__name__))
    for line in table(cards):
        print(line)
    print(f"sslkit report: wrote {out / 'report.json'} and {out / 'report.md'}")


def _with_path(init, path: str) -> SimpleNamespace:
    """The arguments of one checkpoint: its path, and how to read it and view its data."""
    fields = ("arch", "ckpt_format", "branch", "small_stem_padding", "features", "last_n", "crop_size", "resize", "mean",
              "std")
    return SimpleNamespace(ckpt_path=path, **{name: init[name] for name in fields})


def write_figures(cards: list[dict], out: Path) -> list[str]:
    figures = ["spectra.png"]
    plot_report_spectra(cards, out / "spectra.png")
    if any("backgrounds_top1" in c for c in cards):
        plot_report_backgrounds(cards, out / "backgrounds.png")
        figures.append("backgrounds.png")
    if any(c.get("curves") for c in cards):
        plot_report_curves(cards, out / "curves.png")
        figures.append("curves.png")
    return figures


def _cell(value, scale: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * scale:.2f}" if scale != 1 else f"{value:.3g}"


def table(cards: list[dict]) -> list[str]:
    """The Markdown table: a row per checkpoint, a column per instrument that has a value."""
    columns = [(key, title, scale) for key, title, scale in COLUMNS if any(key in c for c in cards)]
    lines = ["| checkpoint | " + " | ".join(title + (" (%)" if scale == 100 else "") for _, title, scale in columns)
             + " |", "|---" * (len(columns) + 1) + "|"]
    for card in cards:
        lines.append(f"| {card['name']} | " + " | ".join(_cell(card.get(key), scale) for key, _, scale in columns)
                     + " |")
    return lines


def markdown(cards: list[dict], figures: list[str], data: str) -> str:
    first = cards[0]
    lines = [f"# Report: {len(cards)} checkpoints on {data}", "",
             f"Linear probe: L-BFGS logistic regression, L2 chosen on {first['n_train']} train features "
             f"(20% held out); kNN: weighted, on the same features; eigenspectrum of the {first['n_test']} val "
             f"features (dim {first['dim']}, alpha fit over ranks {first['alpha_fit_range'][0]}-"
             f"{first['alpha_fit_range'][1]}). BG-Gap = Mixed-Same - Mixed-Rand (Xiao et al. 2020).", "",
             *table(cards), ""]
    lines += [f"- **{c['name']}**: `{c['ckpt_path']}`" + (f", run `{c['run']}`" if c.get("run") else "") for c in cards]
    lines.append("")
    captions = {"spectra.png": "Eigenspectra of the val features, overlaid.",
                "backgrounds.png": "Backgrounds Challenge: probe top-1 on each variant.",
                "curves.png": "What each run logged by epoch."}
    for figure in figures:
        lines += [f"![{captions[figure]}]({figure})", "", captions[figure], ""]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    run(parse(argv))
