"""Subcommands of ``simsiam``: each module has ``add_parser(subparsers)`` setting ``run``."""
from . import embed, export, knn, linear, presets, pretrain, visualize

COMMANDS = [pretrain, knn, linear, embed, export, visualize, presets]
