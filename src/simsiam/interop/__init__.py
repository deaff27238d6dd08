"""Checkpoints of other SimSiam implementations (the official release, lightly, solo-learn) and of
plain torchvision/timm backbones, mapped onto this package's model: ``simsiam import``."""
from .importer import SOURCES, ImportResult, import_checkpoint

__all__ = ["SOURCES", "ImportResult", "import_checkpoint"]
