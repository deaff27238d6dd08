"""From files to batches of views: datasets (in-memory arrays, image folders, WebDataset shards), the
epoch sampler and the training loaders (batched tensor path, per-image reference path, shard stream).

``load_dataset(name, split, data_dir)`` is the entry point; ``DATASETS`` maps
each name to its loader. Nothing is downloaded.
"""

from .decode import decode_image
from .errors import DatasetNotFound, UnreadableImage
from .files import ImageFiles
from .idx import read_idx
from .memory import InMemoryImages
from .sources import DATASETS, load_dataset
from .views import TwoViewDataset, collate_views

__all__ = [
    "DATASETS",
    "DatasetNotFound",
    "ImageFiles",
    "InMemoryImages",
    "TwoViewDataset",
    "UnreadableImage",
    "collate_views",
    "decode_image",
    "load_dataset",
    "read_idx",
]
