"""Histogram of query-negative similarities, accumulated over logged steps and drawn
once per epoch, with the hardness band's share shaded."""
from __future__ import annotations

from pathlib import Path

import torch


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
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

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
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
