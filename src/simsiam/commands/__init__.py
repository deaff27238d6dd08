"""Subcommands of ``simsiam``: each module has ``add_parser(subparsers)`` setting ``run``."""
from . import knn, presets, pretrain

COMMANDS = [pretrain, knn, presets]
