"""``simsiam import``: another implementation's checkpoint as a run folder of this package.

The file is read without unpickling code; a source module sorts its tensors into backbone,
projector and predictor; the architecture is read from the tensors (layout.py); the tensors,
renamed, must then fit the model built from that architecture key for key and shape for shape.
The run folder (``checkpoint.pt``, ``config.json``, ``import.md``) is what every evaluation
command reads; its config records where the weights came from (``imported_from``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..artifacts import checkpoint as ckpt_io
from ..artifacts.checkpoint import CheckpointError
from ..config import Config, from_dict
from ..config.presets import get_preset
from ..methods import build_method
from ..models.timm_backbones import PREFIX as TIMM_PREFIX
from ..version import __version__
from . import lightly, official, solo_learn
from .layout import Head, Parts, head_tensors, read_head, resnet_backbone
from .plain import split_timm, split_torchvision
from .report import import_table, left_out_rows

SOURCES = ("official", "lightly", "solo-learn", "torchvision", "timm:<name>", "hf")
SPLITTERS = {"official": official.split, "lightly": lightly.split, "solo-learn": solo_learn.split,
             "torchvision": split_torchvision}


@dataclass
class ImportResult:
    run_dir: Path
    cfg: Config
    table: str
    notes: list[str]


def read_source(path: str | Path):
    """The file's contents, without running code: a torch file (``weights_only``), a safetensors file,
    or a pretrained folder (``simsiam export --format hf``)."""
    path = Path(path)
    if path.is_dir():
        if ckpt_io.is_pretrained_folder(path):
            return ckpt_io.read_pretrained_folder(path)
        raise CheckpointError(f"{str(path)!r} is a directory without model.safetensors and config.json; give the "
                              "checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"no file at {str(path)!r}: give the checkpoint to import")
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: an 8-byte header length, then the JSON header
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"cannot read {str(path)!r}: a safetensors file that is truncated or corrupt "
                                  f"({str(err).splitlines()[0]}); copy or download it again") from err
    return ckpt_io.read_untrusted(path)


def _sha256(path: Path) -> str:
    target = path / ckpt_io.PRETRAINED_WEIGHTS if path.is_dir() else path
    digest = hashlib.sha256()
    with open(target, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _heads_config(cfg: Config, proj: Optional[Head], pred: Optional[Head], source: str) -> None:
    """The model fields of the heads, from what their tensors say."""
    m = cfg.model
    m.predictor = "mlp"
    if proj is None:
        if pred is not None:
            raise CheckpointError(f"{source}: the file has a predictor but no projector; a SimSiam checkpoint "
                                  "holds both")
        m.pred_hidden = m.pred_hidden or m.dim // 4
        return
    m.proj_layers, m.proj_hidden, m.dim = proj.layers, proj.hidden, proj.out_dim
    m.proj_out_bn_affine = proj.out_affine or not proj.bn_out
    pred_bn_out = bool(pred and pred.bn_out)
    if pred is not None and (pred.layers != 2 or pred.in_dim != proj.out_dim or pred.out_dim != proj.out_dim):
        raise CheckpointError(f"{source}: the predictor is {pred.layers} layer(s) {pred.in_dim} -> {pred.out_dim}, "
                              f"where SimSiam's is 2 layers {proj.out_dim} -> {proj.out_dim}")
    if pred_bn_out and not proj.bn_out:
        raise CheckpointError(f"{source}: BN on the predictor's output but not on the projector's: a head BN "
                              "placement this package does not build (model.head_bn: none, hidden, default, all)")
    m.head_bn = "all" if pred_bn_out else "default" if proj.bn_out else "hidden"
    m.pred_hidden = pred.hidden if pred is not None else m.dim // 4


def _config(parts: Parts, fmt: str, source: str, base: Config, timm_channels: int,
            heads: dict[str, Head]) -> tuple[Config, int, str]:
    """The imported run's config: ``base`` (a preset: the data settings) with the model read from the file."""
    cfg = base
    cfg.method = "simsiam"
    cfg.model.pool_grid, cfg.model.feature_stages = 1, 1  # a standard trunk pools globally
    if fmt.startswith(TIMM_PREFIX):
        cfg.model.backbone, in_channels, said = fmt, timm_channels, f"timm's {fmt[len(TIMM_PREFIX):]}"
    else:
        cfg.model.backbone, cfg.model.width, in_channels, said = resnet_backbone(parts.trunk, source, fmt)
    cfg.model.in_channels = in_channels
    _heads_config(cfg, heads.get("projector"), heads.get("predictor"), source)
    epoch = parts.meta.get("epoch")
    if isinstance(epoch, int) and epoch > 0:
        cfg.optim.epochs = epoch
    arch = parts.meta.get("arch")
    if isinstance(arch, str) and arch not in cfg.model.backbone:
        said += f" (the file's 'arch' says {arch}; the tensors decide)"
    return cfg, in_channels, said


def _fit(model: torch.nn.Module, mapped: dict[str, torch.Tensor], absent: set[str], source: str) -> dict:
    """``mapped`` checked against the model key for key and shape for shape; the parts the file has
    not (``absent``: "projector", "predictor") keep the model's initialisation."""
    wanted = model.state_dict()
    for key in wanted:  # a BN batch counter is bookkeeping, not a weight: 0 where a file has none
        if key.endswith("num_batches_tracked") and key not in mapped and key.split(".")[0] not in absent:
            mapped[key] = torch.zeros_like(wanted[key])
    missing = sorted(k for k in wanted if k not in mapped and k.split(".")[0] not in absent)
    extra = sorted(k for k in mapped if k not in wanted)
    if missing or extra:
        said = "; ".join(part for part in (
            f"missing {', '.join(missing[:4])}" + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            if missing else "",
            f"not in the model {', '.join(extra[:4])}" if extra else "") if part)
        raise CheckpointError(f"{source}: the tensors do not fit the model read from them ({said})")
    wrong = [f"{k} {tuple(mapped[k].shape)} in the file, {tuple(wanted[k].shape)} here" for k in wanted
             if k in mapped and mapped[k].shape != wanted[k].shape]
    if wrong:
        raise CheckpointError(f"{source}: {len(wrong)} tensor(s) of the wrong shape: {'; '.join(wrong[:3])}")
    return {k: mapped.get(k, v).to(v.dtype) for k, v in wanted.items()}


def import_checkpoint(source: str | Path, fmt: str, out: str | Path, *, preset: str = "imagenet",
                      dataset: Optional[str] = None, data_dir: Optional[str] = None, seed: int = 0) -> ImportResult:
    """Import ``source`` (a file of format ``fmt``, one of :data:`SOURCES`) into the run folder ``out``."""
    if fmt not in SPLITTERS and fmt != "hf" and not (fmt.startswith(TIMM_PREFIX) and len(fmt) > len(TIMM_PREFIX)):
        raise ValueError(f"unknown --from {fmt!r}; choose one of: {', '.join(SOURCES)}")
    out, path = Path(out), Path(source)
    if (out / "checkpoint.pt").exists():
        raise FileExistsError(f"{out} already holds a run; choose another --out")
    where = str(path)
    obj = read_source(path)
    notes: list[str] = []
    if fmt == "hf":
        if not (isinstance(obj, dict) and "folder" in obj):
            raise CheckpointError(f"{where}: --from hf takes a folder written by `simsiam export --format hf` "
                                  "(model.safetensors, config.json)")
        cfg = from_dict(obj["config"])
        parts, in_channels, said = None, int(obj["folder"].get("in_channels") or 3), "as exported"
        mapped, absent = dict(obj["model"]), set()
    else:
        base = get_preset(preset)
        if fmt.startswith(TIMM_PREFIX):
            parts, _ = split_timm(obj, where, fmt, base.data.image_size)
            channels = next((int(v.shape[1]) for v in parts.trunk.values() if v.dim() == 4), 3)
        else:
            parts, channels = SPLITTERS[fmt](obj, where), 3
        heads = {role: read_head(getattr(parts, role), role, parts.origin.get(role, ""), where)
                 for role in ("projector", "predictor") if getattr(parts, role)}
        cfg, in_channels, said = _config(parts, fmt, where, base, channels, heads)
        mapped = {f"backbone.{k}": v for k, v in parts.trunk.items()}
        for role, head in heads.items():
            mapped.update(head_tensors(getattr(parts, role), role, head, notes))
        absent = {role for role in ("projector", "predictor") if not getattr(parts, role)}
    if dataset:
        cfg.data.dataset = dataset
    if data_dir:
        cfg.data.data_dir = data_dir
    cfg.run.out_dir, cfg.run.seed = str(out), seed
    torch.manual_seed(seed)  # the heads a file has not start where a seeded run's would
    model = build_method(cfg, in_channels)
    state = _fit(model, mapped, absent, where)
    ckpt_io.load_model_state(model, state, where="imported state")

    rows = []
    for role in ("backbone", "projector", "predictor"):
        count = sum(1 for k in mapped if k.startswith(role + "."))
        if role in absent:
            rows.append((role, "not in the file", f"{role}.*", 0, f"initialised (seed {seed}): train or ignore it"))
        elif parts is None:
            rows.append((role, f"{role}.*", f"{role}.*", count, "as exported"))
        else:
            note = {"backbone": said, "projector": _head_note(cfg, "projector"),
                    "predictor": _head_note(cfg, "predictor")}[role]
            rows.append((role, parts.origin.get(role, ""), f"{role}.*", count, note + "; every shape checked"))
    if parts is not None:
        rows += left_out_rows(parts.dropped)
    table = import_table(rows)
    epoch = int(parts.meta.get("epoch") or 0) if parts is not None else int(obj.get("epoch") or 0)
    provenance = {"source": str(path.resolve()), "format": fmt, "sha256": _sha256(path), "epoch": epoch,
                  "description": f"imported from the {fmt} checkpoint {path.name}"
                  + (f" (epoch {epoch})" if epoch else "") + " with `simsiam import`"}
    if parts is not None and isinstance(parts.meta.get("arch"), str):
        provenance["arch"] = parts.meta["arch"]
    _write_run(out, model, cfg, epoch, provenance, table, notes)
    return ImportResult(out, cfg, table, notes)


def _head_note(cfg: Config, role: str) -> str:
    m = cfg.model
    if role == "projector":
        out_bn = {"hidden": "no output BN", "default": "output BN", "all": "output BN"}[m.head_bn]
        affine = "" if m.head_bn == "hidden" or m.proj_out_bn_affine else " without affine"
        return f"{m.proj_layers} layers {m.proj_hidden} -> {m.dim}, {out_bn}{affine}"
    return f"2 layers, bottleneck {m.pred_hidden}" + (", output BN" if m.head_bn == "all" else "")


def _write_run(out: Path, model, cfg: Config, epoch: int, provenance: dict, table: str, notes: list[str]) -> None:
    """checkpoint.pt (what the evaluation commands read), config.json and import.md, each atomically."""
    ckpt_io.save_atomic({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": epoch, "step": 0,
                         "version": __version__, "imported_from": provenance}, out / "checkpoint.pt")
    text = json.dumps({**cfg.to_dict(), "imported_from": provenance}, indent=2) + "\n"
    ckpt_io.write_atomic(out / "config.json", lambda fh: fh.write(text.encode()))
    report = [f"# Imported: {provenance['source']}", "", f"- format: {provenance['format']}",
              f"- sha256: {provenance['sha256']}", "", table, ""] + [f"- {n}" for n in notes]
    ckpt_io.write_atomic(out / "import.md", lambda fh: fh.write(("\n".join(report) + "\n").encode()))
