"""Representation geometry from the eigenspectrum of the feature covariance.

``eigenspectrum(features)`` returns the covariance eigenvalues (descending), the
power-law exponent alpha of lambda_n ~ n^-alpha (Stringer et al. 2019; Agrawal et al.
2022), the effective rank of RankMe (Garrido et al. 2023) and the participation ratio.
Everything is computed in float64 from one Gram matrix: the covariance is its centred
form, and RankMe's singular values of the uncentred features are the square roots of its
eigenvalues.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

RANKME_EPS = 1e-7


@dataclass
class SpectrumReport:
    """Eigenspectrum summary. ``fit_range`` is 1-based and inclusive, ``[n_min, n_max]``;
    ``rank_limit`` = min(N - 1, D), the most non-zero covariance eigenvalues N samples can
    give (a spectrum cut there says more about N than about the representation)."""

    eigenvalues: torch.Tensor
    alpha: float
    fit_range: tuple[int, int]
    r2: float
    effective_rank: float
    participation_ratio: float
    n_samples: int
    dim: int
    rank_limit: int
    weighting: str
    log_intercept: float

    def to_dict(self) -> dict:
        out = asdict(self)
        out["eigenvalues"] = self.eigenvalues.tolist()
        out["fit_range"] = list(self.fit_range)
        return out

    def summary(self) -> str:
        flag = "" if self.r2 >= 0.9 else "  (r2 < 0.9: not a clean power law)"
        return (f"alpha {self.alpha:.3f} (fit over ranks {self.fit_range[0]}-{self.fit_range[1]}, "
                f"{self.weighting} weights, r2 {self.r2:.3f}){flag}; effective rank {self.effective_rank:.1f}; "
                f"participation ratio {self.participation_ratio:.1f}; N={self.n_samples}, D={self.dim}")


def default_fit_range(rank_limit: int) -> tuple[int, int]:
    """Skip the first few eigenvalues (class structure) and the noisy tail:
    ``[10, rank_limit // 2]``, narrowed for small spectra (Stringer et al. 2019 fit ranks
    12-500 of 2,800 neurons; alpha-ReQ, Agrawal et al. 2022, fits from rank ~10)."""
    n_max = max(2, rank_limit // 2)
    n_min = 10 if n_max >= 40 else max(1, n_max // 8)
    if n_max - n_min < 2:
        raise ValueError(f"a spectrum of rank {rank_limit} is too short to fit a power law")
    return n_min, n_max


def power_law_fit(
    eigenvalues: torch.Tensor, fit_range: tuple[int, int], weighting: str = "1/n"
) -> tuple[float, float, float]:
    """Weighted least squares of ``log lambda_n = c - alpha log n`` over ``fit_range``
    (1-based, inclusive); weights 1/n (Stringer et al.) offset the crowding of points at
    large n on a log axis. Returns (alpha, weighted r2, c)."""
    n_min, n_max = fit_range
    n = torch.arange(n_min, n_max + 1, dtype=torch.float64)
    values = eigenvalues[n_min - 1:n_max].double()
    if (values <= 0).any():
        raise ValueError(f"eigenvalues in the fit range {list(fit_range)} are not all positive; shorten the range")
    x, y = n.log(), values.log()
    w = 1.0 / n if weighting == "1/n" else torch.ones_like(n)
    w = w / w.sum()
    x_mean, y_mean = (w * x).sum(), (w * y).sum()
    slope = (w * (x - x_mean) * (y - y_mean)).sum() / (w * (x - x_mean) ** 2).sum()
    residual = y - (y_mean + slope * (x - x_mean))
    r2 = 1.0 - (w * residual ** 2).sum() / (w * (y - y_mean) ** 2).sum()
    return float(-slope), float(r2), float(y_mean - slope * x_mean)


@torch.no_grad()
def eigenspectrum(
    features: torch.Tensor,
    fit_range: tuple[int, int] | None = None,
    weighting: str = "1/n",
    chunk_size: int = 8192,
) -> SpectrumReport:
    """Eigenspectrum report of ``features`` ``[N, D]`` (any float dtype, any device)."""
    if features.dim() != 2:
        raise ValueError(f"features must be [N, D], got shape {tuple(features.shape)}")
    n, d = features.shape
    if n < 2:
        raise ValueError(f"the eigenspectrum needs at least 2 samples, got {n}")
    if not torch.isfinite(features).all():
        bad = (~torch.isfinite(features)).any(1).nonzero()[:5].view(-1).tolist()
        raise ValueError(f"features contain NaN or Inf (rows {bad}...); check the encoder and the data")
    if weighting not in ("1/n", "uniform"):
        raise ValueError(f"weighting must be '1/n' or 'uniform', got '{weighting}'")
    gram = torch.zeros(d, d, dtype=torch.float64, device=features.device)
    total = torch.zeros(d, dtype=torch.float64, device=features.device)
    for chunk in features.split(chunk_size):
        chunk = chunk.double()
        gram.addmm_(chunk.T, chunk)
        total += chunk.sum(0)
    mean = total / n
    covariance = (gram - n * torch.outer(mean, mean)) / (n - 1)
    eigenvalues = torch.linalg.eigvalsh(covariance).flip(0).clamp_min(0).cpu()
    singular = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().flip(0).cpu()

    p = singular / singular.sum() + RANKME_EPS
    effective_rank = float(torch.exp(-(p * p.log()).sum()))
    participation = float(eigenvalues.sum() ** 2 / (eigenvalues ** 2).sum())
    rank_limit = min(n - 1, d)
    if fit_range is None:
        fit_range = default_fit_range(rank_limit)
    fit_range = (int(fit_range[0]), int(fit_range[1]))
    if not 1 <= fit_range[0] < fit_range[1] <= d:
        raise ValueError(f"fit_range {list(fit_range)} must satisfy 1 <= n_min < n_max <= D={d}")
    if fit_range[1] > rank_limit:
        raise ValueError(
            f"fit_range {list(fit_range)} reaches past the {rank_limit} non-zero eigenvalues that "
            f"N={n} samples of D={d} features can have; end it at {rank_limit // 2} or add samples"
        )
    alpha, r2, intercept = power_law_fit(eigenvalues, fit_range, weighting)
    return SpectrumReport(eigenvalues, alpha, fit_range, r2, effective_rank, participation, n, d, rank_limit,
                          weighting, intercept)
