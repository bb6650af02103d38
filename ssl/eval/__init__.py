"""Evaluators: kNN, linear probe (fast and standard), online classifier, eigenspectrum,
Backgrounds-Challenge sets, loss landscape, the monitors that run them during pretraining, and
the report card."""
from .backgrounds import VARIANTS, BackgroundsChallenge, backgrounds_knn
from .features import extract_features
from .geometry import GeometryMonitor
from .knn import KNNAccuracy, KNNConfig, knn_predict
from .landscape_monitor import LandscapeMonitor
from .linear import fit_logistic_regression, linear_probe
from .linear_probe import LinearProbe
from .online import OnlineClassifier, OnlineClassifierConfig
from .spectrum import SpectrumReport, eigenspectrum

__all__ = [
    "VARIANTS", "BackgroundsChallenge", "GeometryMonitor", "KNNAccuracy", "KNNConfig", "LandscapeMonitor",
    "LinearProbe", "OnlineClassifier", "OnlineClassifierConfig", "SpectrumReport", "backgrounds_knn", "eigenspectrum",
    "extract_features", "fit_logistic_regression", "knn_predict", "linear_probe",
]
