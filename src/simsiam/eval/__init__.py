"""Evaluation of a representation: kNN (the paper's monitor) and feature extraction."""
from .features import eval_mode, extract_features
from .knn import knn_accuracy, knn_predict, knn_sweep

__all__ = ["eval_mode", "extract_features", "knn_accuracy", "knn_predict", "knn_sweep"]
