"""``simsiam export RUN --format hf``: a pretrained folder in the Hugging Face convention.

The folder (``model.safetensors``, ``config.json``; the layout is described, and read, in
``artifacts/checkpoint.py``) gets a model card, ``README.md``, with the Hub's YAML header and what a reader of the card asks first: the data
it was trained on, the preset, the run's kNN (and linear, when measured) figures, the command, and
the lines that load it -- with this package, and without it in plain torchvision or timm.
``load_pretrained(DIR)`` and every evaluation command read the folder back as they read a run.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import torch

from ..artifacts import checkpoint as ckpt_io
from ..artifacts.checkpoint import PRETRAINED_CONFIG as CONFIG
from ..artifacts.checkpoint import PRETRAINED_FORMAT, write_atomic
from ..artifacts.checkpoint import PRETRAINED_WEIGHTS as WEIGHTS
from ..artifacts.runlog import read_metrics
from ..config import Config
from ..models import BACKBONES, input_channels
from ..models.timm_backbones import PREFIX as TIMM_PREFIX
from ..version import __version__
from .classifier import classifier_head
from .pretrained import load_pretrained


def run_figures(run_dir: Path, cfg: Config) -> list[str]:
    """The figures a run left beside its checkpoint, one line each: the kNN monitor's last value and
    the baselines (``metrics.jsonl``), and any ``simsiam knn/linear --json`` result saved in the run."""
    lines = []
    records = read_metrics(run_dir)
    epochs = [r for r in records if r.get("kind") == "epoch" and "knn_acc" in r]
    if epochs:
        last = epochs[-1]
        lines.append(f"kNN (k={cfg.monitor.knn_k}, T={cfg.monitor.knn_t}) on {cfg.data.dataset} "
                     f"{cfg.data.eval_split or 'held-out'}: {last['knn_acc']:.2f}% after {last['epochs_done']} "
                     "epochs (the run's monitor)")
    for r in (r for r in records if r.get("kind") == "baselines"):
        lines.append("same kNN on " + ", ".join(f"{key.replace('_', ' ')} {r[key]:.2f}%"
                                                for key in ("raw_pixels", "random_init") if key in r))
    for path in sorted(run_dir.glob("*.json")):
        if path.name == CONFIG:
            continue
        try:
            res = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(res, dict) and "top1" in res and "mode" in res:
            lines.append(f"linear ({res['mode']}) on {res.get('dataset')} {res.get('split')}: top-1 "
                         f"{res['top1']:.2f}%, top-5 {res.get('top5', float('nan')):.2f}% ({path.name})")
        elif isinstance(res, dict) and "accuracy" in res and "bank_size" in res:
            best = ", ".join(f"{k} {v:.2f}%" for k, v in res["accuracy"].items())
            lines.append(f"kNN on {res.get('dataset')} {res.get('split')} (bank {res['bank_size']}): {best} "
                         f"({path.name})")
    return lines


def _run_command(run_dir: Path) -> str:
    """The command that trained the run, as its report.md records it ("" when there is none)."""
    report = run_dir / "report.md"
    if report.is_file():
        match = re.search(r"^- command: `(.*)`$", report.read_text(), flags=re.M)
        if match:
            return match.group(1)
    return ""


def hf_how_to_load(cfg: Config, backbone, out: Path, torchvision_lines: Callable[..., str]) -> str:
    """Python lines that load the folder: with simsiam, and the backbone in plain torchvision or timm
    (``torchvision_lines``: export.py's ``torchvision_how_to_load``, passed in, as export.py calls this module)."""
    weights = str(out / WEIGHTS)
    lines = ["# with simsiam:", f"from simsiam import load_pretrained; model, cfg = load_pretrained({str(out)!r})",
             "# without it: the backbone's tensors, named as torchvision/timm name them",
             "from safetensors.torch import load_file",
             f"state = {{k[len('backbone.'):]: v for k, v in load_file({weights!r}).items() "
             "if k.startswith('backbone.')}"]
    name = cfg.model.backbone
    if name.startswith(TIMM_PREFIX):
        lines += ["import timm",
                  f"model = timm.create_model({name[len(TIMM_PREFIX):]!r}, num_classes=0, "
                  f"in_chans={input_channels(backbone)}"
                  + (f", img_size={cfg.data.image_size}" if "vit" in name and cfg.data.image_size else "") + ")",
                  "model.load_state_dict(state)  # model(x): the pooled features"]
    elif name in BACKBONES:
        lines.append(torchvision_lines(backbone, cfg, out / WEIGHTS, load_expr="state"))
    return "\n".join(lines)


def model_card(cfg: Config, run_dir: Path, figures: list[str], command: str, how_to_load: str, source: dict,
               epochs_done: int) -> str:
    m = cfg.model
    trained = source.get("description") or (
        f"`simsiam pretrain` on {cfg.data.dataset}" + (f" ({cfg.data.data_dir})" if cfg.data.data_dir else ""))
    lines = ["---", "library_name: simsiam", "tags:", "- self-supervised-learning", "- simsiam",
             "- image-feature-extraction", "pipeline_tag: image-feature-extraction", "---", "",
             f"# {cfg.method} {m.backbone}, pretrained on {cfg.data.dataset}", "",
             "Self-supervised (SimSiam, Chen & He 2021) weights: backbone, projector and predictor, in "
             f"`{WEIGHTS}`; the full config in `{CONFIG}`.", "",
             f"- trained: {trained}",
             f"- preset: `{cfg.preset or '-'}`; {epochs_done} epochs done of {cfg.optim.epochs} planned, batch "
             f"{cfg.optim.batch_size}, base lr {cfg.optim.base_lr}, seed {cfg.run.seed}",
             f"- model: {m.backbone}" + ("" if ":" in m.backbone else f" (width {m.width})")
             + f", projector {m.proj_layers} layers ({m.proj_hidden} -> {m.dim}), predictor bottleneck "
             f"{m.pred_hidden or m.dim // 4}; input {cfg.data.image_size or 'native'} px",
             f"- command: `{command or 'not recorded (no report.md beside the checkpoint)'}`", "",
             "## Figures", ""]
    lines += [f"- {f}" for f in figures] or ["- none recorded with the run (save `simsiam knn RUN --json RUN/knn.json` "
                                            "or `simsiam linear RUN --json RUN/linear.json` before exporting)"]
    lines += ["", "## Load", "", "```python", how_to_load, "```", "",
              f"Exported by simsiam {__version__} from `{run_dir}`. Upload with "
              "`huggingface-cli upload <user>/<name> <this folder>`.", ""]
    return "\n".join(lines)


def write_pretrained_folder(out: Path, tensors: dict[str, torch.Tensor], info: dict, card: str) -> Path:
    """The three files, each written atomically (a crash leaves no half-written file)."""
    from safetensors.torch import save

    data = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata={"format": "pt"})
    write_atomic(out / WEIGHTS, lambda fh: fh.write(data))
    text = json.dumps({"format": PRETRAINED_FORMAT, **info}, indent=2) + "\n"
    write_atomic(out / CONFIG, lambda fh: fh.write(text.encode()))
    write_atomic(out / "README.md", lambda fh: fh.write(card.encode()))
    return out


def export_hf(checkpoint: str | Path, out: str | Path, torchvision_lines: Callable[..., str]) -> tuple[int, str]:
    """Write the folder; ``(number of tensors, the lines that load it)``."""
    if classifier_head(checkpoint) is not None:
        raise ValueError(f"{str(checkpoint)!r} is a fine-tuned classifier: --format hf is for pretrained runs (the "
                         "backbone and its heads); export a classifier with --format torchvision, safetensors or onnx")
    saved = ckpt_io.load(checkpoint)
    model, cfg = load_pretrained(checkpoint)
    path = Path(checkpoint)
    run_dir = path if path.is_dir() else path.parent
    out = Path(out)
    source = dict(saved.get("imported_from") or (saved.get("folder") or {}).get("source") or {})
    epochs_done = int(saved.get("epoch") or 0)
    how = hf_how_to_load(cfg, model.backbone, out, torchvision_lines)
    card = model_card(cfg, run_dir, run_figures(run_dir, cfg), _run_command(run_dir), how, source, epochs_done)
    tensors = model.state_dict()
    info = {"library_name": "simsiam", "simsiam_version": __version__, "method": cfg.method,
            "backbone": cfg.model.backbone, "in_channels": input_channels(model.backbone),
            "num_features": int(model.backbone.num_features), "dim": cfg.model.dim, "epochs_done": epochs_done,
            "source": source or {"run": str(run_dir)}, "config": cfg.to_dict()}
    write_pretrained_folder(out, tensors, info, card)
    return len(tensors), how
