"""Subcommands of ``simsiam``: each module has ``add_parser(subparsers)`` setting ``run``."""
from . import (
    bench,
    embed,
    export,
    knn,
    linear,
    presets,
    pretrain,
    reproduce,
    similar,
    sweep,
    visualize,
)

COMMANDS = [pretrain, knn, linear, embed, similar, export, visualize, presets, reproduce, sweep, bench]
