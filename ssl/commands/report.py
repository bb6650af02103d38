"""``sslkit report``: checkpoints judged by every instrument, side by side.

    sslkit report -c configs/linear_probe.yaml --ckpt_path A.ckpt B.ckpt --out DIR
    sslkit report -c configs/linear_probe.yaml --ckpt_path A.ckpt moco_v2_800ep_pretrain.pth.tar --names ours moco
    sslkit report -c configs/linear_probe.yaml --ckpt_path A.ckpt --finetune runs/finetune_demo

Each checkpoint (any format ``load_backbone`` reads) is encoded once per split, under the
evaluation view of the probe config, and every instrument reads those cached features: the
linear probe (top-1, top-5), weighted kNN, the eigenspectrum (alpha, effective rank,
participation ratio) and, where the data has masks, the Backgrounds Challenge with BG-Gap.
Where a checkpoint's run folder has a ``metrics.csv`` (``sslkit fit``'s logs), the
``val/online_top1`` logged at the checkpoint's own epoch and step (with the classifier's source,
``global``/``all`` or ``bank``, from the checkpoint) and the run's curves by epoch join it, and a
``landscape.json`` beside it (``sslkit landscape``) adds the loss-landscape numbers where it was
measured on that very checkpoint (same SHA-256), labelled with the loss it measured; with
``--finetune DIR ...``, the ``sslkit finetune`` runs under those folders that fine-tuned one of the
checkpoints (same SHA-256; ``random:NAME`` runs as baselines) add a fine-tuning table. Whatever is
left out is said in ``report.md``. Writes ``DIR/report.json`` and ``DIR/report.md`` with the
figures (``spectra.png``, ``backgrounds.png``, ``curves.png``).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
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
    parser.add_argument("--finetune", type=str, nargs="+", default=[],
                        help="folders searched for sslkit finetune runs (finetune.json) of these checkpoints")
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


def _field(config, name: str, default=None):
    """``name`` of a config saved as a dict or as a dataclass."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    return config.get(name, default) if isinstance(config, dict) else default


def checkpoint_facts(ckpt_path: str) -> dict:
    """What a Lightning checkpoint of ``sslkit fit`` records of itself: its ``epoch`` and
    ``global_step``, the online classifier's source (``online_source``: ``global``, ``all`` or
    ``bank``) and the kNN monitor of its run (``run_knn``: k and temperature); ``{}`` for any
    other file, or a model name."""
    from sslkit.checkpoints import CheckpointError
    from sslkit.checkpoints.reading import read_checkpoint
    from sslkit.eval.knn import KNNConfig
    from sslkit.eval.online import OnlineClassifierConfig

    if not Path(ckpt_path).is_file():
        return {}
    try:
        checkpoint = read_checkpoint(ckpt_path)
    except (CheckpointError, OSError):
        return {}
    facts = {key: checkpoint[key] for key in ("epoch", "global_step") if isinstance(checkpoint.get(key), int)}
    hparams = checkpoint.get("hyper_parameters")
    if isinstance(hparams, dict):
        online = hparams.get("online_classifier")
        if online is not None:
            facts["online_source"] = _field(online, "views", OnlineClassifierConfig.views)
        knn = hparams.get("knn")
        k = _field(knn, "k", hparams.get("knn_k", KNNConfig.k))  # (0.2 saved knn_k, knn_temperature)
        temperature = _field(knn, "temperature", hparams.get("knn_temperature", KNNConfig.temperature))
        facts["run_knn"] = {"k": k, "temperature": temperature}
    return facts


def run_logs(ckpt_path: str, facts: dict | None = None) -> dict:
    """What the checkpoint's run logged (``metrics.csv`` next to its ``checkpoints`` folder):
    the curves of ``CURVES`` by epoch and the ``val/online_top1`` logged at the checkpoint's own
    epoch and step (``facts``: ``checkpoint_facts``; validation logs at ``global_step - 1``),
    with ``online_top1_at``; where that row is missing, none and a line in ``notes`` saying
    why. ``{}`` without logs."""
    folder = Path(ckpt_path).parent.parent
    metrics = folder / "metrics.csv"
    if not metrics.is_file():
        return {}
    curves: dict[str, dict[int, float]] = {}
    online: dict[tuple[int, int], float] = {}
    with open(metrics) as f:
        for row in csv.DictReader(f):
            if row.get("epoch") in (None, ""):
                continue
            epoch = int(float(row["epoch"]))
            for key in CURVES:
                if row.get(key) not in (None, ""):
                    curves.setdefault(key, {})[epoch] = float(row[key])
            if row.get("val/online_top1") not in (None, "") and row.get("step") not in (None, ""):
                online[(epoch, int(float(row["step"])))] = float(row["val/online_top1"])
    out = {"run": str(folder), "curves": {k: [[e, v] for e, v in sorted(c.items())] for k, c in curves.items()}}
    if not online:
        return out
    facts = facts or {}
    if "epoch" not in facts or "global_step" not in facts:
        out["notes"] = [f"online top-1 left out: the checkpoint records no epoch and step to find its row of "
                        f"`{metrics}`"]
        return out
    epoch, step = facts["epoch"], facts["global_step"]
    at = [(e, s) for e, s in online if e == epoch and s in (step - 1, step)]
    if at:
        out["online_top1"] = online[at[-1]]
        out["online_top1_at"] = {"epoch": at[-1][0], "step": at[-1][1]}
    else:
        logged = sorted({e for e, _ in online})
        out["notes"] = [f"online top-1 left out: `{metrics}` has no val/online_top1 at this checkpoint's epoch "
                        f"{epoch}, step {step} (logged at epochs {logged[0]}-{logged[-1]})"]
    return out


def landscape_numbers(ckpt_path: str, digest: str | None) -> dict:
    """The top Hessian eigenvalue and trace of ``sslkit landscape`` (``hessian_loss``: the loss
    it measured, ``ssl`` or ``probe``), where the ``landscape.json`` beside the checkpoint was
    measured on this very checkpoint: the SHA-256 it records is ``digest`` (the checkpoint's);
    a record without one (written before sslkit recorded it) must name this file, resolved,
    and be newer than it. Otherwise none, and a line in ``notes`` saying why."""
    if not Path(ckpt_path).is_file():
        return {}
    path = Path(ckpt_path).with_name("landscape.json")
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except ValueError:
        record = None
    if not isinstance(record, dict) or "top_eigenvalues" not in record or "trace" not in record:
        return {"notes": [f"Hessian left out: `{path}` is no record of sslkit landscape"]}
    recorded, named = record.get("ckpt_sha256"), record.get("ckpt_path")
    if recorded:
        if recorded != digest:
            return {"notes": [f"Hessian left out: `{path}` was measured on another checkpoint (`{named}`, SHA-256 "
                              f"{recorded[:12]}), not on this one (SHA-256 {(digest or '?')[:12]})"]}
        matched = "sha256"
    else:
        if named is None or Path(named).resolve() != Path(ckpt_path).resolve():
            return {"notes": [f"Hessian left out: `{path}` was measured on `{named}`, not on this checkpoint"]}
        if Path(ckpt_path).stat().st_mtime > path.stat().st_mtime:
            return {"notes": [f"Hessian left out: `{path}` records no SHA-256 and the checkpoint was written after "
                              f"it (overwritten since it was measured?)"]}
        matched = "path"
    return {"hessian_top": record["top_eigenvalues"][0], "hessian_trace": record["trace"],
            "hessian_trace_stderr": record.get("trace_stderr"), "hessian_loss": record.get("loss"),
            "landscape": {"path": str(path), "matched_by": matched, "loss": record.get("loss"),
                          "batches": record.get("batches"), "batch_size": record.get("batch_size")}}


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
        cards.append(joined({"name": name, "ckpt_path": path, "branch": init.branch, **card}, path,
                            source.key["checkpoint"]))
    runs = finetune_runs(init.finetune)
    baselines = attach_finetune_runs(cards, runs)
    record = {"data": type(data).__name__, "crop_size": init.crop_size, "checkpoints": cards}
    if init.finetune:
        record["finetune_baselines"] = baselines
    (out / "report.json").write_text(json.dumps(record, indent=2))
    figures = write_figures(cards, out)
    (out / "report.md").write_text(markdown(cards, figures, type(data).__name__, baselines))
    for line in table(cards):
        print(line)
    print(f"sslkit report: wrote {out / 'report.json'} and {out / 'report.md'}")


def finetune_runs(folders: list[str]) -> list[dict]:
    """Every ``finetune.json`` under ``folders`` (``sslkit finetune``'s result record), each
    with its ``run`` folder; a folder that does not exist is an error naming it."""
    from sslkit.eval.finetune import RESULT_FILE

    runs = []
    for folder in folders:
        if not Path(folder).exists():
            raise FileNotFoundError(f"--finetune '{folder}' does not exist (give the folders of sslkit finetune runs)")
        for path in sorted(Path(folder).rglob(RESULT_FILE)):
            try:
                record = json.loads(path.read_text())
            except ValueError as err:
                raise ValueError(f"'{path}' is not the JSON sslkit finetune writes: {err}") from err
            runs.append({**record, "run": str(path.parent)})
    return runs


def attach_finetune_runs(cards: list[dict], runs: list[dict]) -> list[dict]:
    """Each card's ``finetune`` rows: the runs whose backbone is that checkpoint (same SHA-256;
    a run that recorded none, the same resolved path). Returns the runs from a random
    initialisation (``random:NAME``), the baselines; a run of another checkpoint is left out
    with a note on every card."""
    baselines, unmatched = [], []
    digests = [c.get("ckpt_sha256") for c in cards]
    for run in runs:
        source = run.get("source", {})
        row = {k: run.get(k) for k in ("run", "train", "labels", "label_seed", "num_labelled")}
        for split in ("val", "test"):
            if isinstance(run.get(split), dict):
                row[f"{split}_top1"], row[f"{split}_top5"] = run[split]["top1"], run[split]["top5"]
        if str(source.get("ckpt_path", "")).startswith("random:"):
            baselines.append({**row, "source": source["ckpt_path"]})
            continue
        matches = [c for c, d in zip(cards, digests) if source.get("sha256") and source["sha256"] == d
                   or not source.get("sha256") and Path(c["ckpt_path"]).resolve() == Path(source.get("ckpt_path", "")).resolve()]
        for card in matches:
            card.setdefault("finetune", []).append(row)
        if not matches:
            unmatched.append(f"{run['run']} (fine-tuned `{source.get('ckpt_path')}`)")
    if unmatched:
        for card in cards:
            card.setdefault("notes", []).append(
                f"fine-tuning runs left out, not of any checkpoint here (SHA-256 differs): {', '.join(unmatched)}")
    return baselines


def finetune_table(cards: list[dict], baselines: list[dict]) -> list[str]:
    """Fine-tuning results by checkpoint, mode and labels: val (and test) top-1 as mean ± sd
    over the runs (seeds), with their number."""
    groups: dict[tuple, list[dict]] = {}
    for name, rows in [(c["name"], c.get("finetune", [])) for c in cards] + [
            (b["source"], [b]) for b in baselines]:
        for row in rows:
            groups.setdefault((name, row["train"], str(row["labels"])), []).append(row)
    if not groups:
        return []

    def cell(rows: list[dict], key: str) -> str:
        values = [100 * r[key] for r in rows if r.get(key) is not None]
        if not values:
            return "-"
        return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"

    lines = ["## Fine-tuning", "", "`sslkit finetune` runs found under `--finetune`, joined to the checkpoint they "
             "fine-tuned (same SHA-256); `random:NAME` rows are the same network from random initialisation. "
             "Mean ± sd over the runs (each its own label draw and seed).", "",
             "| backbone | trained | labels | runs | val top-1 (%) | test top-1 (%) |", "|---|---|---|---|---|---|"]
    for (name, train, labels), rows in groups.items():
        lines.append(f"| {name} | {train} | {labels} | {len(rows)} | {cell(rows, 'val_top1')} | {cell(rows, 'test_top1')} |")
    return lines + [""]


def joined(card: dict, path: str, digest: str | None) -> dict:
    """``card`` with what the checkpoint records of itself (``checkpoint_facts``), its run's
    logs at its own step (``run_logs``) and its landscape (``landscape_numbers``), their
    ``notes`` together."""
    facts = checkpoint_facts(path)
    logs, landscape = run_logs(path, facts), landscape_numbers(path, digest)
    notes = logs.pop("notes", []) + landscape.pop("notes", [])
    card = {**card, **{k: facts[k] for k in ("online_source", "run_knn") if k in facts}, **logs, **landscape}
    if digest and not digest.startswith("hub:"):
        card["ckpt_sha256"] = digest
    if "epoch" in facts:
        card["checkpoint_epoch"], card["checkpoint_step"] = facts["epoch"], facts.get("global_step")
    if notes:
        card["notes"] = notes
    return card


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


def source_of(key: str, card: dict) -> str | None:
    """Where a column's figure comes from: the online classifier's ``views``, the kNN's k and
    temperature, the loss the Hessian is of."""
    if key == "online_top1":
        return card.get("online_source", "source not recorded")
    if key == "knn_top1" and "knn_k" in card:
        return f"k={card['knn_k']}, T={card['knn_temperature']:g}"
    if key in ("hessian_top", "hessian_trace"):
        return f"{card.get('hessian_loss') or 'unrecorded'} loss"
    return None


def table(cards: list[dict]) -> list[str]:
    """The Markdown table: a row per checkpoint, a column per instrument that has a value. A
    column whose figures share one source names it in its title; otherwise each cell does."""
    columns = [(key, title, scale) for key, title, scale in COLUMNS if any(key in c for c in cards)]
    sources = {key: {source_of(key, c) for c in cards if key in c} for key, _, _ in columns}
    titles = [title + (f" ({next(iter(sources[key]))})" if len(sources[key]) == 1 and None not in sources[key]
                       else "") + (" (%)" if scale == 100 else "") for key, title, scale in columns]
    lines = ["| checkpoint | " + " | ".join(titles) + " |", "|---" * (len(columns) + 1) + "|"]
    for card in cards:
        cells = []
        for key, _, scale in columns:
            cell = _cell(card.get(key), scale)
            if len(sources[key]) > 1 and key in card and source_of(key, card):
                cell += f" ({source_of(key, card)})"
            cells.append(cell)
        lines.append(f"| {card['name']} | " + " | ".join(cells) + " |")
    return lines


def markdown(cards: list[dict], figures: list[str], data: str, baselines: list[dict] | None = None) -> str:
    first = cards[0]
    lines = [f"# Report: {len(cards)} checkpoints on {data}", "",
             f"Linear probe: L-BFGS logistic regression on the {first['n_train']} train features, its L2 chosen "
             f"on {first['held_out']} of them held out ({first['val_fraction']:.0%}), then refitted on all; kNN: "
             f"weighted (k={first['knn_k']}, T={first['knn_temperature']:g}), train features as the bank; "
             f"eigenspectrum of the {first['n_test']} val features (dim {first['dim']}, alpha fit over ranks "
             f"{first['alpha_fit_range'][0]}-{first['alpha_fit_range'][1]}). BG-Gap = Mixed-Same - Mixed-Rand "
             f"(Xiao et al. 2020).", "", *table(cards), "", *sources_text(cards), *finetune_table(cards, baselines or [])]
    for c in cards:
        lines.append(f"- **{c['name']}**: `{c['ckpt_path']}`" + (f", run `{c['run']}`" if c.get("run") else "")
                     + (f", epoch {c['checkpoint_epoch']}, step {c['checkpoint_step']}" if "checkpoint_epoch" in c
                        else ""))
        lines += [f"  - {note}" for note in c.get("notes", [])]
    lines.append("")
    captions = {"spectra.png": "Eigenspectra of the val features, overlaid.",
                "backgrounds.png": "Backgrounds Challenge: probe top-1 on each variant.",
                "curves.png": "What each run logged by epoch."}
    for figure in figures:
        lines += [f"![{captions[figure]}]({figure})", "", captions[figure], ""]
    return "\n".join(lines)


def sources_text(cards: list[dict]) -> list[str]:
    """What report.md says of the columns that come from elsewhere than the features: the
    online classifier, the runs' own kNN, the Hessian."""
    lines = []
    if any("online_top1" in c for c in cards):
        views = {c.get("online_source") for c in cards if "online_top1" in c}
        text = ("Online top-1: the run's `val/online_top1` logged at the checkpoint's own epoch and step "
                "(metrics.csv); its source is the online classifier's `views`.")
        if views & {"global", "all"}:
            text += (" `global`/`all`: a linear layer trained in the training step on augmented views (the large "
                     "crops, or every view), an estimate independent of the probe.")
        if "bank" in views:
            text += (" `bank`: an L-BFGS probe refitted at each validation on the kNN bank's clean features, so its "
                     "agreement with the linear probe holds by construction; it is not an independent check.")
        lines += [text, ""]
    knn = {c["name"]: c["run_knn"] for c in cards if c.get("run_knn") and c.get("curves", {}).get("val/knn_top1")}
    if knn:
        lines += ["The runs' own `val/knn_top1` (curves) used the method's kNN: " + "; ".join(
            f"{name} k={v['k']}, T={v['temperature']:g}" for name, v in knn.items()) + ".", ""]
    if any("hessian_top" in c for c in cards):
        lines += ["Hessian: from the `landscape.json` beside the checkpoint, measured on that very checkpoint "
                  "(same SHA-256); `ssl` loss: the method's own objective, `probe` loss: the cross-entropy of a "
                  "linear probe on its frozen features.", ""]
    if any(c.get("notes") for c in cards):
        lines += ["Left out, and why, under each checkpoint below.", ""]
    return lines


def main(argv: list[str]) -> None:
    run(parse(argv))
