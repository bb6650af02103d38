
import numpy as np
import pytest
import torch

from sslkit.eval.spectrum import eigenspectrum


def exact_covariance_features(eigenvalues, n, seed=0):
    """Centred N x D features whose sample covariance is exactly diag(eigenvalues)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, len(eigenvalues), generator=g, dtype=torch.float64)
    x -= x.mean(0)
    q, _ = torch.linalg.qr(x)
    return q * torch.sqrt((n - 1) * torch.as_tensor(eigenvalues, dtype=torch.float64))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.5, 2.0])
def test_alpha_is_recovered_from_gaussian_data_with_a_power_law_spectrum(alpha):
    d, n = 256, 40_000
    g = torch.Generator().manual_seed(int(alpha * 10))
    spectrum = torch.arange(1, d + 1, dtype=torch.float64) ** -alpha
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    features = (torch.randn(n, d, generator=g, dtype=torch.float64) * spectrum.sqrt()) @ rotation.T
    report = eigenspectrum(features.float())
    assert abs(report.alpha - alpha) < 0.05, report.summary()
    assert report.fit_range == (10, 128) and report.r2 > 0.99


def rankme_reference(singular):
    p = np.asarray(singular, dtype=np.float64)
    p = p / p.sum() + 1e-7
    return float(np.exp(-(p * np.log(p)).sum()))


def test_effective_rank_and_participation_ratio_closed_forms():
    d, n = 64, 2_000
    isotropic = eigenspectrum(exact_covariance_features(torch.ones(d), n))
    assert isotropic.participation_ratio == pytest.approx(d, rel=1e-9)
    assert isotropic.effective_rank == pytest.approx(rankme_reference(np.ones(d)), rel=1e-6)
    assert isotropic.effective_rank == pytest.approx(d, rel=1e-4)

    r = 10
    low_rank = torch.cat([torch.ones(r), torch.zeros(d - r)])
    report = eigenspectrum(exact_covariance_features(low_rank, n), fit_range=(1, 5))
    assert report.participation_ratio == pytest.approx(r, rel=1e-9)
    assert report.effective_rank == pytest.approx(rankme_reference([1.0] * r + [0.0] * (d - r)), rel=1e-4)
    assert report.effective_rank == pytest.approx(r, rel=1e-4)

    a, b, x, y = 8, 56, 4.0, 0.5
    two_level = torch.cat([torch.full((a,), x), torch.full((b,), y)])
    report = eigenspectrum(exact_covariance_features(two_level, n))
    assert report.participation_ratio == pytest.approx((a * x + b * y) ** 2 / (a * x ** 2 + b * y ** 2), rel=1e-9)
    # centred features: RankMe's uncentred singular values are sqrt((N - 1) lambda)
    assert report.effective_rank == pytest.approx(rankme_reference(np.sqrt(two_level.numpy())), rel=1e-5)
    assert torch.allclose(report.eigenvalues, two_level.double().sort(descending=True).values, atol=1e-9)


def test_fewer_samples_than_dimensions_reports_the_rank_limit():
    features = torch.randn(50, 200)
    report = eigenspectrum(features)
    assert report.rank_limit == 49 and report.n_samples == 50 and report.dim == 200
    assert report.fit_range[1] <= 49 // 2
    assert (report.eigenvalues[49:] < 1e-9 * report.eigenvalues[0]).all()
    with pytest.raises(ValueError, match="reaches past the 49 non-zero eigenvalues"):
        eigenspectrum(features, fit_range=(5, 100))


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="NaN or Inf"):
        eigenspectrum(torch.tensor([[1.0, float("nan")], [0.0, 1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="at least 2 samples"):
        eigenspectrum(torch.randn(1, 8))
    with pytest.raises(ValueError, match=r"fit_range \[0, 5\]"):
        eigenspectrum(torch.randn(100, 8), fit_range=(0, 5))
    with pytest.raises(ValueError, match=r"n_max <= D=8"):
        eigenspectrum(torch.randn(100, 8), fit_range=(2, 20))
    with pytest.raises(ValueError, match=r"must be \[N, D\]"):
        eigenspectrum(torch.randn(10))
