"""Evaluators: kNN, Backgrounds-Challenge sets (and, as they land, linear probe and eigenspectrum)."""
from .backgrounds import VARIANTS, BackgroundsChallenge, backgrounds_knn
from .features import extract_features
from .knn import KNNAccuracy, knn_predict

__all__ = ["VARIANTS", "BackgroundsChallenge", "KNNAccuracy", "backgrounds_knn", "extract_features", "knn_predict"]
