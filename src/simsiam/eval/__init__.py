"""What a trained backbone is worth and what it is for: loading a run, the training monitors,
kNN and linear evaluation, embeddings, pictures and export."""
from .features import eval_mode, extract_features
from .knn import knn_accuracy, knn_predict, knn_sweep

__all__ = ["eval_mode", "extract_features", "knn_accuracy", "knn_predict", "knn_sweep"]
