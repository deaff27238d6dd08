"""Subcommands of ``simsiam``: each module has ``add_parser(subparsers)`` setting ``run``."""
from . import (
    bench,
    embed,
    export,
    finetune,
    import_,
    knn,
    linear,
    pack,
    predict,
    presets,
    pretrain,
    reproduce,
    similar,
    sweep,
    visualize,
)

COMMANDS = [pretrain, knn, linear, finetune, predict, embed, similar, export, import_, pack, visualize, presets,
            reproduce, sweep, bench]
