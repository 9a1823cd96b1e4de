"""Export a trained encoder as Hugging Face-style folders that load without radlab.

``export_encoder(model, out)`` writes::

    out/image/      the image tower: timm towers via timm's ``save_for_hf`` (config.json with ``architecture``,
                    ``model_args`` and ``pretrained_cfg`` + model.safetensors), loadable with
                    ``timm.create_model("local-dir:out/image", pretrained=True)`` or ``timm.create_model(architecture,
                    pretrained=True, pretrained_cfg_overlay={"file": "out/image/model.safetensors"}, in_chans=1,
                    num_classes=0, img_size=...)``; transformers towers via ``save_pretrained`` (AutoModel);
                    any other tower as ``model.safetensors`` + ``tower.json``.
    out/text/       the text tower via ``save_pretrained`` (AutoModel + AutoTokenizer), when there is one.
    out/heads.safetensors   the joint-space projections (and label head, word-region matcher) — radlab-specific.
    out/dino_head.safetensors  a DINOv2 run's DINO/iBOT heads, copied from the checkpoint, so
                    ``objective.kwargs.init_heads=out`` continues pre-training with them.
    out/README.md   a model card: preprocessing, loading code, training config and evaluation results.
    out/radlab_export.json  what was exported; it marks the folder as a radlab export, which a later export
                    replaces as a whole (a non-empty folder without it is refused).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file
from timm.models import save_for_hf
from torch import nn

from radlab import __version__
from radlab.atomic import replace_folder, temp_folder
from radlab.models.dino_checkpoint import HEAD_FILE
from radlab.models.encoder import RadEncoder
from radlab.models.image_towers import TimmImageTower
from radlab.models.towers import Preprocess

HEADS_FILE = "heads.safetensors"
EXPORT_FILE = "radlab_export.json"
PROJECTION_WORDS = {"linear": "bias-free linear projections `*_proj.weight`",
                    "mlp": "MLP projections Linear, ReLU, Linear: `*_proj.0.*`, `*_proj.2.*`",
                    "mlp_wide": "MLP projections Linear (as wide as the tower), ReLU, Linear: `*_proj.0.*`, "
                                "`*_proj.2.*`"}


def _tensors(module: nn.Module | None, prefix: str) -> dict[str, torch.Tensor]:
    if module is None:
        return {}
    return {f"{prefix}.{k}": v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def export_image_tower(model: RadEncoder, directory: Path) -> dict[str, Any]:
    """Write the image tower to ``directory``; returns how it loads (for the model card)."""
    tower, p = model.image_tower, model.preprocess
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(tower, TimmImageTower):
        data = {"input_size": (p.channels, p.image_size, p.image_size), "mean": (p.mean,) * p.channels,
                "std": (p.std,) * p.channels, "crop_pct": 1.0}
        save_for_hf(tower.backbone, str(directory), safe_serialization=True, data_config=data)
        return {"library": "timm", "architecture": tower.name}
    if hasattr(tower, "save_pretrained"):
        tower.save_pretrained(directory, p)
        return {"library": "transformers", "architecture": type(tower.model).__name__}
    save_file(_tensors(tower, "image_tower"), str(directory / "model.safetensors"))
    (directory / "tower.json").write_text(json.dumps({"class": type(tower).__name__, "embed_dim": tower.embed_dim}))
    return {"library": "radlab", "architecture": type(tower).__name__}


def export_encoder(model: RadEncoder, out: Path | str, train_config: dict | None = None,
                   results: dict | None = None, name: str | None = None, copies: tuple[Path, ...] = ()) -> Path:
    """Export towers, heads, a model card (see the module docstring) and ``copies`` (files) to ``out``: written
    to a folder beside it that then replaces ``out`` whole, so no file of an earlier export there remains."""
    out = Path(out)
    check_export_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(out)
    try:
        write_export(model, tmp, train_config, results, name or out.name)
        for path in copies:
            shutil.copyfile(path, tmp / path.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_folder(tmp, out)
    return out


def check_export_folder(out: Path) -> None:
    """Refuse to export over anything but a new or empty folder or an earlier radlab export (``EXPORT_FILE``)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"export folder {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not (out / EXPORT_FILE).is_file():
        raise FileExistsError(f"export folder {out} holds other files and no {EXPORT_FILE}, so it is not an "
                              "earlier radlab export to replace; give a new or empty folder")


def write_export(model: RadEncoder, out: Path, train_config: dict | None, results: dict | None, name: str) -> None:
    """The export's files, written into the (empty) folder ``out``."""
    image = export_image_tower(model, out / "image")
    text = None
    if model.text_tower is not None and hasattr(model.text_tower, "save"):
        model.text_tower.save(out / "text")
        text = {"library": "transformers", "architecture": type(model.text_tower.model).__name__,
                **model.text_tower.spec()}
    heads = {**_tensors(model.image_proj, "image_proj"), **_tensors(model.text_proj, "text_proj"),
             **_tensors(model.label_head, "label_head"), **_tensors(model.local_match, "local_match")}
    if heads:
        save_file(heads, str(out / HEADS_FILE))
    meta = {"embed_dim": model.embed_dim, "projection": model.projection_kind, "preprocess": vars(model.preprocess),
            "image": image, "text": text,
            "label_names": model.label_head.class_names if model.label_head is not None else None,
            "local_match": model.local_match.spec() if model.local_match is not None else None}
    (out / EXPORT_FILE).write_text(json.dumps(meta, indent=2))
    (out / "README.md").write_text(model_card(meta, train_config, results, name))


def export_checkpoint(checkpoint: Path | str, out: Path | str, results: Path | str | None = None) -> Path:
    """Export a radlab checkpoint folder; its ``train_config`` and its figures in an optional metrics JSON
    (``encoder_results``) go in the card."""
    from radlab.evaluation.features import encoder_hash
    from radlab.models.checkpoint import load_encoder_checkpoint, read_spec

    checkpoint = Path(checkpoint)
    spec = read_spec(checkpoint)
    model = load_encoder_checkpoint(checkpoint)
    metrics = encoder_results(Path(results), encoder_hash(model), checkpoint) if results else None
    heads = (checkpoint / HEAD_FILE,) if (checkpoint / HEAD_FILE).is_file() else ()
    return export_encoder(model, out, spec.get("train_config"), metrics, copies=heads,
                          name=checkpoint.parent.name if checkpoint.name == "checkpoint" else checkpoint.name)


def encoder_results(path: Path, digest: str, checkpoint: Path) -> dict:
    """The figures a ``radlab eval`` metrics JSON holds for the encoder whose weights hash to ``digest``: the
    evaluated encoder's, or the one it was compared with (``baseline``), each with its own leakage check as
    ``pretraining_overlap["encoder"]``; refused when neither is that encoder."""
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"metrics {path}: not JSON ({err})") from err
    if not isinstance(metrics, dict):
        raise ValueError(f"metrics {path}: not a `radlab eval` metrics JSON (no object at the top)")
    overlaps = metrics.get("pretraining_overlap") or {}
    roles = {"encoder": metrics, "compare": metrics.get("baseline") or {}}
    for role, entry in roles.items():
        if entry.get("encoder_hash") == digest:
            return {**metrics, **entry, "pretraining_overlap": {"encoder": overlaps.get(role)}}
    recorded = ", ".join(f"{entry.get('encoder') or '?'} (weights hash {entry.get('encoder_hash', 'not recorded')})"
                         for entry in roles.values() if entry)
    raise ValueError(f"metrics {path} evaluate {recorded}, not {checkpoint} (weights hash {digest}); give the "
                     "metrics JSON of `radlab eval` on this checkpoint")


def _usage(meta: dict) -> str:
    p = meta["preprocess"]
    if meta["image"]["library"] == "timm":
        return (f'import timm\nmodel = timm.create_model("local-dir:image", pretrained=True).eval()\n'
                f"# input: [B, {p['channels']}, {p['image_size']}, {p['image_size']}], pixels in [0, 1] "
                f"normalised with mean {p['mean']:.4g} and std {p['std']:.4g}\n"
                "features = model.forward_head(model.forward_features(x), pre_logits=True)")
    if meta["image"]["library"] == "transformers":
        pad = ("from PIL import ImageOps\n"
               "images = [ImageOps.pad(im, (max(im.size),) * 2, color=0) for im in images]  # zero-pad to a square"
               "\n" if p["fit"] == "pad" else "")
        return ('from transformers import AutoImageProcessor, AutoModel\n' + pad +
                'processor = AutoImageProcessor.from_pretrained("image")  # the trained size, its mean/std\n'
                'model = AutoModel.from_pretrained("image").eval()\n'
                'x = processor(images, return_tensors="pt")["pixel_values"]\n'
                "features = model(pixel_values=x).last_hidden_state[:, 0]")
    return "from radlab.models import load_encoder  # this tower needs radlab"


def _text_usage(pooling: str, hidden_layers: int = 1) -> str:
    pooled = ("hidden[:, 0]  # the [CLS] token; not pooler_output (no pooler head was trained)" if pooling == "cls"
              else "(hidden * mask).sum(1) / mask.sum(1)  # masked mean over real tokens")
    hidden = ("hidden = model(**tokens).last_hidden_state" if hidden_layers == 1 else
              f"hidden = sum(model(**tokens, output_hidden_states=True).hidden_states[-{hidden_layers}:])"
              f"  # last {hidden_layers} layers summed")
    return "\n".join([
        "from transformers import AutoModel, AutoTokenizer",
        'tokenizer = AutoTokenizer.from_pretrained("text")',
        'model = AutoModel.from_pretrained("text", add_pooling_layer=False).eval()',
        'tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")',
        hidden,
        'mask = tokens["attention_mask"].unsqueeze(-1)',
        f"features = {pooled}"])


def _results_table(results: dict) -> str:
    """Each task's macro AUC with whether the encoder's pre-training was checked against the test patients
    (``pretraining_overlap["encoder"]``), and a warning under the table when it overlapped them."""
    from radlab.evaluation.report import leakage_text

    leakage = leakage_text((results.get("pretraining_overlap") or {}).get("encoder"))
    rows = ["| task | macro AUC | seconds | leakage |", "|---|---|---|---|"]
    for task, metrics in results.get("tasks", {}).items():
        auc = metrics.get("macro_auc")
        auc = f"{auc:.3f}" if isinstance(auc, int | float) else "–"
        rows.append(f"| {task} | {auc} | {metrics.get('seconds', '')} | {leakage} |")
    if leakage.startswith("overlap"):
        rows += ["", "Warning: this encoder pre-trained on test patients or images of this evaluation (reported "
                 "with --allow-overlap); these figures are optimistic."]
    return "\n".join(rows)


def model_card(meta: dict, train_config: dict | None, results: dict | None, name: str) -> str:
    """A Hugging Face model card (YAML front matter + markdown) for an exported encoder."""
    p = meta["preprocess"]
    front = {"library_name": meta["image"]["library"], "tags": ["radiology", "chest-x-ray", "radlab",
                                                                "image-feature-extraction"]}
    parts = [f"---\n{yaml.safe_dump(front, sort_keys=False)}---", f"# {name}",
             f"Radiograph encoder exported by radlab {__version__}.",
             "## Image tower", f"- architecture: `{meta['image']['architecture']}` ({meta['image']['library']}), "
             f"folder `image/`",
             f"- input: {p['channels']} channel(s), {p['image_size']} x {p['image_size']} px (the radiograph's "
             f"{Preprocess(**p).geometry()}), pixels in [0, 1] normalised with mean {p['mean']:.6g}, "
             f"std {p['std']:.6g}" + (" (radlab's; the transformers model reads its own per-channel statistics, "
                                      "`image/preprocessor_config.json`)" if meta["image"]["library"] ==
                                     "transformers" else ""),
             f"- joint embedding: {meta['embed_dim']}-d ({PROJECTION_WORDS[meta['projection']]}, weights in "
             f"`{HEADS_FILE}`)",
             "```python\n" + _usage(meta) + "\n```"]
    if meta["text"]:
        parts += ["## Text tower", f"- `{meta['text']['architecture']}` in `text/` (AutoModel + AutoTokenizer), "
                                   f"{meta['text']['pooling']} pooling, up to {meta['text']['max_length']} tokens",
                  "```python\n" + _text_usage(meta["text"]["pooling"], meta["text"].get("hidden_layers", 1))
                  + "\n```"]
    if meta["label_names"]:
        parts += ["## Label head", "Class prototypes for: " + ", ".join(meta["label_names"])]
    if results:
        parts += ["## Evaluation results", f"Encoder `{results.get('encoder', '')}`, seed {results.get('seed', '')}, "
                  f"code {results.get('code_version', '')}.", _results_table(results)]
    if train_config:
        parts += ["## Training configuration", "```yaml\n" + yaml.safe_dump(train_config, sort_keys=False) + "```"]
    return "\n\n".join(parts) + "\n"
