"""Downstream with few labels: fine-tuning a run's backbone on a label budget beside the same network
from scratch, a linear probe and kNN (``label_efficiency.py``), and classifying new images (``predict.py``)."""
from .label_efficiency import finetune
from .recipe import CONTENDERS, FinetuneRecipe

__all__ = ["CONTENDERS", "FinetuneRecipe", "finetune"]
