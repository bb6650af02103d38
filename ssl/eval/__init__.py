"""Evaluators: kNN, linear probe (fast and standard), eigenspectrum, geometry monitor,
Backgrounds-Challenge sets."""
from .backgrounds import VARIANTS, BackgroundsChallenge, backgrounds_knn
from .features import extract_features
from .geometry import GeometryMonitor
from .knn import KNNAccuracy, knn_predict
from .linear import fit_logistic_regression, linear_probe
from .linear_probe import LinearProbe
from .spectrum import SpectrumReport, eigenspectrum

__all__ = [
    "VARIANTS", "BackgroundsChallenge", "GeometryMonitor", "KNNAccuracy", "LinearProbe", "SpectrumReport",
    "backgrounds_knn", "eigenspectrum", "extract_features", "fit_logistic_regression", "knn_predict",
    "linear_probe",
]
