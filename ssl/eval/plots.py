"""The figures sslkit draws next to its numbers: the eigenspectrum with its power-law fit, the
geometry of the representation by epoch, and the histogram of query-negative similarities
with the hardness band. Each writes a PNG (matplotlib's Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .spectrum import SpectrumReport


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 120) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)


def plot_spectrum(reports: dict[str, SpectrumReport], path: str, title: str = "") -> None:
    """Log-log plot of each spectrum with its fitted power law over the fit range."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(5, 4))
    for i, (name, report) in enumerate(reports.items()):
        values = report.eigenvalues[: report.rank_limit]
        ranks = torch.arange(1, len(values) + 1)
        positive = values > 0
        ax.loglog(ranks[positive], values[positive], color=f"C{i}", lw=1.2,
                  label=f"{name}: alpha {report.alpha:.2f}, eff. rank {report.effective_rank:.0f}")
        n_min, n_max = report.fit_range
        fit_n = torch.arange(n_min, n_max + 1, dtype=torch.float64)
        ax.loglog(fit_n, torch.exp(report.log_intercept - report.alpha * fit_n.log()), color=f"C{i}", ls="--", lw=1)
    ax.set_xlabel("rank n")
    ax.set_ylabel("covariance eigenvalue")
    ax.set_title(title or "eigenspectrum (dashed: power-law fit)", fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_geometry(history: list[dict], path: Path) -> None:
    plt = _pyplot()

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    axes[0].plot(epochs, [h["val/alpha"] for h in history], "o-")
    axes[0].axhline(1.0, color="0.7", ls="--", lw=1)
    axes[0].set_title("alpha (power-law exponent)", fontsize=9)
    axes[1].plot(epochs, [h["val/effective_rank"] for h in history], "o-", color="C1")
    axes[1].set_title("effective rank (RankMe)", fontsize=9)
    axes[2].plot(epochs, [100 * h["val/knn_top1_subset"] for h in history], "o-", color="C2", label="subset kNN")
    full = [(h["epoch"], 100 * h["val/knn_top1"]) for h in history if h.get("val/knn_top1") is not None]
    if full:
        axes[2].plot(*zip(*full), "s--", color="C3", label="val/knn_top1")
    axes[2].set_title("kNN top-1 (%)", fontsize=9)
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("epoch")
    _save(fig, path, dpi=110)


class SimilarityHistogram:
    """Counts of cosine similarities in ``bins`` bins over [-1, 1]: all negatives, and those
    inside the hardness band. Not a module: nothing of it enters checkpoints."""

    def __init__(self, bins: int = 200) -> None:
        self.bins = bins
        self.reset()

    def reset(self) -> None:
        self.all = torch.zeros(self.bins, dtype=torch.float64)
        self.band = torch.zeros(self.bins, dtype=torch.float64)
        self.count = 0

    @torch.no_grad()
    def add(self, similarity: torch.Tensor, band_similarity: torch.Tensor) -> None:
        self.all += torch.histc(similarity.detach().float(), self.bins, -1, 1).double().cpu()
        self.band += torch.histc(band_similarity.detach().float(), self.bins, -1, 1).double().cpu()
        self.count += 1

    def save(self, path: str | Path, title: str, band=None) -> None:
        plt = _pyplot()
        edges = torch.linspace(-1, 1, self.bins + 1)
        centres = 0.5 * (edges[1:] + edges[:-1])
        width = float(edges[1] - edges[0])
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar(centres, self.all, width, color="0.6", label="all queue negatives")
        label = f"kept by {band.lo}-{band.hi} band" if band is not None and not band.full else "kept (full queue)"
        ax.bar(centres, self.band, width, color="C3", alpha=0.7, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("cosine similarity of query and negative")
        ax.set_ylabel("count")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _save(fig, path, dpi=110)


def plot_report_spectra(cards: list[dict], path: Path) -> None:
    """The eigenspectra of several checkpoints on one log-log axis (each normalised by its
    total variance, so spectra of different scales compare by shape)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, card in enumerate(cards):
        values = torch.tensor(card["eigenvalues"], dtype=torch.float64)
        values = values[values > 0] / values.sum()
        ax.loglog(torch.arange(1, len(values) + 1), values, color=f"C{i}", lw=1.2,
                  label=f"{card['name']}: alpha {card['alpha']:.2f}, eff. rank {card['effective_rank']:.0f}")
    ax.set_xlabel("rank n")
    ax.set_ylabel("eigenvalue / total variance")
    ax.set_title("eigenspectra of the val features", fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_report_backgrounds(cards: list[dict], path: Path) -> None:
    """Backgrounds Challenge accuracies, a group of bars per variant, a bar per checkpoint."""
    plt = _pyplot()
    variants = ["original", "only_fg", "mixed_same", "mixed_rand"]
    shown = [c for c in cards if "backgrounds_top1" in c]
    width = 0.8 / max(1, len(shown))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, card in enumerate(shown):
        values = [100 * card["backgrounds_top1"][v] for v in variants]
        ax.bar([j + i * width for j in range(len(variants))], values, width,
               label=f"{card['name']} (BG-Gap {100 * card['backgrounds_top1']['bg_gap']:.1f})", color=f"C{i}")
    ax.set_xticks([j + width * (len(shown) - 1) / 2 for j in range(len(variants))], variants)
    ax.set_ylabel("probe top-1 (%)")
    ax.set_title("Backgrounds Challenge", fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_report_curves(cards: list[dict], path: Path) -> None:
    """What each run logged by epoch: kNN and online top-1, alpha, effective rank."""
    plt = _pyplot()
    panels = [("val/knn_top1", "kNN top-1 (%)", 100), ("val/online_top1", "online top-1 (%)", 100),
              ("val/alpha", "alpha", 1), ("val/effective_rank", "effective rank", 1)]
    panels = [p for p in panels if any(p[0] in c.get("curves", {}) for c in cards)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
    for ax, (key, title, scale) in zip(axes[0], panels):
        for i, card in enumerate(cards):
            points = card.get("curves", {}).get(key)
            if points:
                ax.plot([e + 1 for e, _ in points], [v * scale for _, v in points], "o-", ms=3, color=f"C{i}",
                        label=card["name"])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize=7)
    _save(fig, path, dpi=110)


def plot_landscape(record: dict, path: Path, title: str = "") -> None:
    """The Hessian's spectral density (log scale) and, by block, top eigenvalue and trace."""
    plt = _pyplot()
    blocks = record.get("by_block", {})
    fig, axes = plt.subplots(1, 2 if blocks else 1, figsize=(10 if blocks else 5, 3.5), squeeze=False)
    grid, density = record["density"]["grid"], record["density"]["density"]
    ax = axes[0][0]
    ax.semilogy(grid, [max(d, 1e-12) for d in density], color="C0")
    for value in record["top_eigenvalues"]:
        ax.axvline(value, color="C3", lw=0.8, ls="--")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(f"{title}\ntrace {record['trace']:.3g} +- {record['trace_stderr']:.2g} (dashed: top eigenvalues)",
                 fontsize=8)
    if blocks:
        ax = axes[0][1]
        names = list(blocks)
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], [max(blocks[n]["top_eigenvalue"], 1e-12) for n in names], 0.4, label="top eigenvalue")
        ax.bar([i + 0.2 for i in x], [max(abs(blocks[n]["trace"]), 1e-12) for n in names], 0.4, label="|trace|")
        ax.set_yscale("log")
        ax.set_xticks(list(x), names, rotation=45, ha="right", fontsize=7)
        ax.set_title("by block", fontsize=8)
        ax.legend(fontsize=7)
    _save(fig, path)
