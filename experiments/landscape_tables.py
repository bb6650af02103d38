"""The tables of docs/landscape.md, rendered from a results file of landscape_study.py.

Every figure the page quotes comes from the committed results file through this script, with
its 95% interval over seeds (Student's t; ratios on the log scale, as geometric means), so the
page can be checked against the file (tests/test_docs.py does).

    python experiments/landscape_tables.py docs/data/landscape_study.json [more results files]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
from landscape_study import QUANTITIES, SHORT  # noqa: E402

from sslkit.eval.intervals import mean_interval, ratio_interval  # noqa: E402

OVER_TIME = ("val/hessian_trace", "val/adaptive_hessian_trace", "val/fisher_trace", "val/weight_norm")
VARIANTS = {"original": "Original", "only_fg": "Only-FG", "mixed_same": "Mixed-Same", "mixed_rand": "Mixed-Rand",
            "bg_gap": "BG-Gap"}


def number(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.2e}"


def mean_cell(values: list[float], scale: float = 1.0) -> str:
    """The mean over seeds with its 95% t interval (the value alone from one seed)."""
    values = [scale * v for v in values]
    if len(values) < 2:
        return number(values[0])
    i = mean_interval(values)
    return f"{number(i.estimate)} [{number(i.low)}, {number(i.high)}]"


def ratio_cell(ratios: list[float]) -> str:
    """The geometric mean of same-seed ratios with its 95% interval, and whether it excludes 1."""
    if len(ratios) < 2 or any(r <= 0 for r in ratios):
        return ", ".join(number(r) for r in ratios)
    i = ratio_interval(ratios, [1.0] * len(ratios))
    return f"{number(i.estimate)} [{number(i.low)}, {number(i.high)}]" + ("" if i.excludes(1.0) else " (includes 1)")


def shown_quantities(runs: dict[str, list[dict]]) -> list[str]:
    return [k for k in QUANTITIES if all(k in h for arm in runs.values() for run in arm for h in run["history"])]


def point_table(runs: dict[str, list[dict]], index: int, title: str) -> str:
    """Each arm's quantities at one measurement (0: initialisation, -1: end of training), and
    at the end the kNN accuracy and the embedding spread of the last training step (near 0:
    collapsed)."""
    shown = shown_quantities(runs)
    step = {run["history"][index]["step"] for arm in runs.values() for run in arm}
    lines = [f"{title} (step {', '.join(str(e) for e in sorted(step))}; mean over seeds [95% interval]):", "",
             "| arm | seeds | " + " | ".join(SHORT[k] for k in shown) + " | kNN top-1 (%) | embedding spread |",
             "|---" * (len(shown) + 4) + "|"]
    for arm, records in runs.items():
        cells = [mean_cell([run["history"][index][k] for run in records]) for k in shown]
        end = index == -1
        spread = [run.get("train", {}).get("train/embedding_spread") for run in records]
        lines.append(f"| {arm} | {len(records)} | " + " | ".join(cells) + " | "
                     + (mean_cell([run["knn_top1"] for run in records], 100) if end else "-") + " | "
                     + (mean_cell(spread) if end and None not in spread else "-") + " |")
    return "\n".join(lines)


def over_time_table(runs: dict[str, list[dict]]) -> str:
    """Per arm, same-run ratios: first measurement after initialisation over initialisation,
    and end of training over that first measurement."""
    keys = [k for k in OVER_TIME if k in shown_quantities(runs)]
    first = {run["history"][1]["step"] for arm in runs.values() for run in arm}
    lines = [f"Same-run ratios over time (first = step {', '.join(str(e) for e in sorted(first))}; geometric mean "
             "over seeds [95% interval]):", "",
             "| arm | " + " | ".join(f"{SHORT[k]}: first / init | {SHORT[k]}: end / first" for k in keys) + " |",
             "|---" * (2 * len(keys) + 1) + "|"]
    for arm, records in runs.items():
        cells = []
        for k in keys:
            cells.append(ratio_cell([run["history"][1][k] / run["history"][0][k] for run in records]))
            cells.append(ratio_cell([run["history"][-1][k] / run["history"][1][k] for run in records]))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(results: dict) -> str:
    """Same-seed ratios between arms at the end of training: one row per comparison, one
    column per quantity (the per-seed ratios are in the results file, under ``paired``)."""
    cells: dict[str, dict[str, str]] = {}
    for name, ratios in results["paired"].items():
        quantity, comparison = name.split(": ", 1)
        cells.setdefault(comparison, {})[quantity] = ratio_cell(ratios)
    quantities = list(dict.fromkeys(name.split(": ", 1)[0] for name in results["paired"]))
    lines = ["Same-seed ratios at the end of training (geometric mean over seeds [95% interval]; "
             "\"includes 1\": no difference shown):", "",
             "| ratio | " + " | ".join(quantities) + " |", "|---" * (len(quantities) + 1) + "|"]
    for comparison, row in cells.items():
        lines.append(f"| {comparison} | " + " | ".join(row.get(q, "-") for q in quantities) + " |")
    return "\n".join(lines)


def backgrounds_table(results: dict) -> str:
    """The Backgrounds Challenge of each arm's last checkpoints, and same-seed differences."""
    runs = {arm: records for arm, records in results["runs"].items() if all("backgrounds" in r for r in records)}
    if not runs:
        return ""
    lines = ["Backgrounds Challenge of the last checkpoints (kNN top-1, %; mean over seeds [95% interval]):", "",
             "| arm | seeds | " + " | ".join(VARIANTS.values()) + " |", "|---" * (len(VARIANTS) + 2) + "|"]
    for arm, records in runs.items():
        lines.append(f"| {arm} | {len(records)} | "
                     + " | ".join(mean_cell([r["backgrounds"][v] for r in records], 100) for v in VARIANTS) + " |")
    differences = results.get("backgrounds_differences", {})
    if differences:
        lines += ["", "| same-seed difference (points) | per seed | mean [95% interval] |", "|---|---|---|"]
        for name, d in differences.items():
            variant, rest = name.split(": ", 1)
            cell = (f"{d['estimate']:.1f} [{d['low']:.1f}, {d['high']:.1f}]" + ("" if d["excludes_0"] else " (includes 0)")
                    if "estimate" in d else "-")
            lines.append(f"| {VARIANTS.get(variant, variant)}: {rest} | {', '.join(f'{x:.1f}' for x in d['differences'])}"
                         f" | {cell} |")
    return "\n".join(lines)


def probe_noise(results: dict) -> str:
    """How noisy one measurement is: each trace's standard error over its Hutchinson probes,
    relative to the trace, as the median over every measurement of every run."""
    parts = []
    for key, label in (("val/hessian_trace", "trace"), ("val/adaptive_hessian_trace", "adaptive trace"),
                       ("val/fisher_trace", "Fisher trace")):
        rel = [h[key + "_stderr"] / h[key] for arm in results["runs"].values() for run in arm
               for h in run["history"] if key + "_stderr" in h and h[key] > 0]
        if rel:
            parts.append(f"{label} {100 * statistics.median(rel):.1f}% (largest {100 * max(rel):.1f}%)")
    return ("One measurement's own noise, the standard error over its Hutchinson probes relative to the "
            "estimate, median over all measurements: " + ", ".join(parts) + ".") if parts else ""


def tables(results: dict) -> list[str]:
    """The markdown tables of one results file, in the page's order."""
    runs = results["runs"]
    out = [point_table(runs, 0, "At initialisation"), point_table(runs, -1, "At the end of training"),
           over_time_table(runs)]
    if results["paired"]:
        out.append(paired_table(results))
    if backgrounds_table(results):
        out.append(backgrounds_table(results))
    if probe_noise(results):
        out.append(probe_noise(results))
    return out


def seconds(results: dict) -> str:
    walls = [run["seconds"] for arm in results["runs"].values() for run in arm]
    return f"{len(walls)} runs, {statistics.fmean(walls):.0f} s each on average ({min(walls):.0f}-{max(walls):.0f} s)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", nargs="+", help="results files written by landscape_study.py")
    for path in parser.parse_args().results:
        results = json.loads(Path(path).read_text())
        print(f"<!-- {path}: {seconds(results)} -->\n")
        print("\n\n".join(tables(results)) + "\n")


if __name__ == "__main__":
    main()
