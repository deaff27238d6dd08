"""Subcommands of ``simsiam``: each module has ``add_parser(subparsers)`` setting ``run``."""
from . import (
    bench,
    embed,
    export,
    finetune,
    import_,
    knn,
    linear,
    predict,
    presets,
    pretrain,
    reproduce,
    similar,
    sweep,
    visualize,
)

COMMANDS = [pretrain, knn, linear, finetune, predict, embed, similar, export, import_, visualize, presets, reproduce, sweep, bench]
