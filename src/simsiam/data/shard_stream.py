"""Which images of the shards each DDP rank and DataLoader worker reads in an epoch, and the stream
that reads them (and, on the per-image pipeline, decodes and augments them: ``shard_items.py``).

The epoch's stream is every shard in an order drawn from the epoch's seed, one after the other
(``shards.json`` says how many images each holds, so positions are known before reading). Of its
``steps = N // global_batch`` global batches (the incomplete last one dropped, as everywhere),
rank ``r`` owns the contiguous stretch of ``steps * local_batch`` positions starting at
``r * steps * local_batch``; that stretch is cut into ``steps`` batches, and DataLoader worker
``w`` of ``W`` reads the contiguous block of those batches numbered ``j = w, w + W, ...`` counted
within blocks (``worker_block``) -- the batches the DataLoader, which takes one batch from each
worker in turn, hands out as the rank's batches ``w, w + W, ...``. So every position belongs to
exactly one (rank, worker); every rank makes the same number of steps; and a worker reads only
the shards under its own block (plus at most the rest of one shard it starts inside of).

Within a worker the images are mixed by a seeded shuffle buffer; ``pack`` already wrote them in
random order. Each image is handed a view seed by the worker's generator (the per-image pipeline
draws its views from it), so a batch is a function of (seed, epoch, rank, worker count) alone, and a
run resumed mid-epoch skips the batches already trained without decoding them.

What cannot be used is not fatal: a file that does not decode, a sample without its ``.cls`` label,
a shard that is not a tar or ends early -- each position it leaves empty becomes a one-line
"skipped" entry naming the shard and the member, and the batch is filled as ``loaders._collate``
does for unreadable files (on the batched pipeline, ``loaders.ShardViewLoader`` after its decode).
"""
from __future__ import annotations

import random
from typing import Iterator, Union

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .errors import UnreadableImage
from .files import IMAGE_EXTENSIONS
from .shards import ShardedImages, read_shard

SHUFFLE_BUFFER = 1024  # samples (encoded bytes) held per worker for mixing
_IMAGE_TYPES = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)


def worker_block(steps: int, workers: int, role: int) -> tuple[int, int]:
    """(first batch, batch count) of the rank's ``steps`` batches that worker ``role`` reads: the
    counts differ by at most one, the larger first, as the DataLoader's turn-taking needs."""
    base, extra = divmod(steps, workers)
    return role * base + min(role, extra), base + (role < extra)


def stream_pieces(sizes: list[int], order: list[int], start: int, stop: int) -> list[tuple[int, int, int]]:
    """Positions ``[start, stop)`` of the shards ``sizes`` laid end to end in ``order``, as
    ``(shard, first, stop)`` pieces of shards (positions within the shard)."""
    pieces, offset = [], 0
    for s in order:
        lo, hi = max(start, offset), min(stop, offset + sizes[s])
        if lo < hi:
            pieces.append((s, lo - offset, hi - offset))
        offset += sizes[s]
    return pieces


class ShardStream(IterableDataset):
    """Yields this rank's batches of one epoch as lists of ``(payload, label, index)`` items (or, for
    an image that cannot be used, the line saying why); ``payload`` is ``prepare(bytes, name,
    view_seed)`` (``shard_items.py``: the bytes as they are, or per-image views) and ``index`` the
    image's position in the shards' stored order, the same every epoch. Call :meth:`set_epoch` before
    iterating."""

    def __init__(self, data: ShardedImages, prepare, local_batch: int, global_batch: int, rank: int, world: int):
        self.data, self.prepare = data, prepare
        self.local_batch, self.global_batch, self.rank, self.world = local_batch, global_batch, rank, world
        self.epoch_key, self.start_batch = None, 0
        self.offsets = [sum(data.shard_sizes[:s]) for s in range(len(data.shard_sizes))]

    def set_epoch(self, epoch_key: int, start_batch: int = 0) -> None:
        self.epoch_key, self.start_batch = epoch_key, start_batch

    def steps(self) -> int:
        return len(self.data) // self.global_batch

    def __iter__(self) -> Iterator[list]:
        if self.epoch_key is None:
            raise RuntimeError("ShardStream.set_epoch must be called before iterating")
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        # Resumed at batch b, the DataLoader's first worker must hand out batch b: the roles turn by b.
        role = (worker + self.start_batch) % workers
        first, count = worker_block(self.steps(), workers, role)
        skip = len(range(role, self.start_batch, workers))  # this role's batches before start_batch
        rank_start = self.rank * self.steps() * self.local_batch
        start = rank_start + first * self.local_batch
        order = torch.randperm(len(self.data.shard_sizes),
                               generator=torch.Generator().manual_seed(self.epoch_key)).tolist()
        rng = random.Random(f"{self.epoch_key}:{self.rank}:{workers}:{role}")
        samples = self._shuffled(self._read(order, start, start + count * self.local_batch), rng)
        batch: list = []
        for n, (index, sample) in enumerate(samples):
            view_seed = rng.getrandbits(62)  # drawn for skipped batches too: later seeds stay the same
            if n // self.local_batch < skip:
                continue
            batch.append(self._item(index, sample, view_seed))
            if len(batch) == self.local_batch:
                yield batch
                batch = []

    def _read(self, order: list[int], start: int, stop: int) -> Iterator[tuple[int, Union[dict, str]]]:
        """``(index, sample)`` for every position of ``[start, stop)``; a position the shard could not
        fill comes as ``(index, why)``."""
        for s, first, end in stream_pieces(self.data.shard_sizes, order, start, stop):
            path = self.data.shard_paths[s]
            errors: list[str] = []

            def on_error(exn: Exception, errors=errors) -> bool:
                errors.append(f"{type(exn).__name__}: {exn.args[0] if exn.args else exn}")
                return True  # go on: the positions left are reported as skipped

            position = first
            for sample in read_shard(path, on_error, first):
                if position >= end:
                    break
                yield self.offsets[s] + position, sample
                position += 1
            for missing in range(max(position, first), end):
                why = errors[-1] if errors else "it holds fewer images than shards.json says"
                yield self.offsets[s] + missing, (f"{path}: not a readable tar, or it ends early ({why}); its image "
                                                  f"{missing} skipped")

    @staticmethod
    def _shuffled(samples: Iterator, rng: random.Random) -> Iterator:
        buffer: list = []
        for sample in samples:
            if len(buffer) < SHUFFLE_BUFFER:
                buffer.append(sample)
                continue
            j = rng.randrange(len(buffer))
            buffer[j], sample = sample, buffer[j]
            yield sample
        rng.shuffle(buffer)
        yield from buffer

    def _item(self, index: int, sample: Union[dict, str], view_seed: int):
        if isinstance(sample, str):
            return sample
        member = f"{sample.get('__url__', '?')}: {sample.get('__key__', '?')}"
        kind = next((k for k in sample if k in _IMAGE_TYPES), None)
        if kind is None:
            return f"{member} has no image (members: {', '.join(k for k in sample if not k.startswith('__'))})"
        try:
            label = int(sample["cls"])
        except (KeyError, ValueError):
            return f"{member} has no .cls label (an integer class index); pack the folder again with simsiam pack"
        try:
            return self.prepare(sample[kind], f"{member}.{kind}", view_seed), label, index
        except UnreadableImage as err:
            return str(err)
