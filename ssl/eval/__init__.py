"""Evaluators: kNN (and, as they land, linear probe and eigenspectrum)."""
from .knn import KNNAccuracy, knn_predict

__all__ = ["KNNAccuracy", "knn_predict"]
