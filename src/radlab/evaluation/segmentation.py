"""Segmentation probe: a 1x1-conv (linear) or light conv decoder on frozen patch tokens, upsampled bilinearly
to the mask size, trained briefly with BCE + Dice on the train split's ``mask_<structure>`` columns; test
Dice and IoU per structure, against the mean-mask baseline (training masks averaged and thresholded). A structure
no training record has a mask for is not scored (listed as ``untrained``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radlab.data.images import fit_square, image_shape, read_mask
from radlab.data.records import MASK_PREFIX
from radlab.evaluation.context import TASKS, EvalContext, TaskSkipped, nonzero, single_thread
from radlab.evaluation.metrics import dice_iou


def load_masks(ctx: EvalContext, rows: np.ndarray, structures: list[str]) -> np.ndarray:
    """[N, S, size, size] float masks in the images' geometry (``Preprocess``); NaN where a record has no mask.
    A mask is brought to that geometry on its own, so it must have its image's shape or a scaled copy of it;
    one of another aspect ratio (saved square for a portrait film, or without the image's EXIF rotation) would
    land beside its anatomy and is refused, naming both files."""
    p = ctx.encoder.preprocess
    out = np.full((len(rows), len(structures), p.image_size, p.image_size), np.nan, dtype=np.float32)
    for n, i in enumerate(rows):
        image: tuple[Path, tuple[int, int]] | None = None  # the record's image and its shape, read once
        for s, name in enumerate(structures):
            path = ctx.table.mask_path(int(i), name)
            if path is not None and path.exists():
                binary = read_mask(path)
                if image is None:
                    image_path = ctx.table.image_path(int(i))
                    image = image_path, image_shape(image_path)
                check_aligned(binary.shape, *image, path)
                out[n, s] = fit_square(binary.astype(np.float32), p.image_size, p.fit, p.resize) > 0.5
    return out


def check_aligned(mask: tuple[int, ...], image_path: Path, image: tuple[int, int], mask_path: Path) -> None:
    """Refuse a mask whose aspect ratio is not its image's (``image``: height, width), beyond a pixel of rounding
    in a scaled copy."""
    height, width = image
    if abs(mask[0] * width - mask[1] * height) > max(width, height, mask[0], mask[1]):
        raise ValueError(f"{mask_path}: a {mask[1]}x{mask[0]} px mask for the {width}x{height} px image "
                         f"{image_path} (width x height after EXIF rotation): not the image's shape or a scaled "
                         "copy of it, so it would not lie on its anatomy")


def token_grid(ctx: EvalContext, split: str) -> torch.Tensor:
    """Patch tokens as a feature map [N, D, rows, cols]."""
    tokens = torch.from_numpy(ctx.image_features(split, kind="tokens"))
    size = ctx.encoder.preprocess.image_size
    with torch.no_grad():
        dummy = torch.zeros(1, ctx.encoder.preprocess.channels, size, size,
                            device=next(ctx.encoder.parameters()).device)
        grid = ctx.encoder.image_output(dummy).grid
    if grid is None or grid[0] * grid[1] != tokens.shape[1]:
        raise TaskSkipped("the image tower does not expose a patch-token grid")
    return tokens.transpose(1, 2).reshape(len(tokens), tokens.shape[2], *grid)


def decoder(dim: int, outputs: int, kind: str) -> nn.Module:
    if kind == "linear":
        return nn.Conv2d(dim, outputs, 1)
    if kind == "light":
        return nn.Sequential(nn.Conv2d(dim, 64, 3, padding=1), nn.GELU(), nn.Conv2d(64, outputs, 1))
    raise ValueError(f"decoder must be 'linear' or 'light', got {kind!r}")


def masked_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice over the (record, structure) pairs that have a mask."""
    known = ~torch.isnan(target[:, :, 0, 0])
    t = torch.nan_to_num(target)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none").mean((2, 3))
    p = logits.sigmoid()
    dice = 1 - (2 * (p * t).sum((2, 3)) + 1) / (p.sum((2, 3)) + t.sum((2, 3)) + 1)
    return ((bce + dice) * known).sum() / known.sum().clamp_min(1)


@single_thread()
def train_decoder(x: torch.Tensor, masks: torch.Tensor, kind: str, steps: int, seed: int,
                  batch_size: int = 32, train_size: int | None = None) -> nn.Module:
    """Fit the decoder; the loss is taken at ``train_size`` (masks area-downsampled) to save compute."""
    if train_size is not None and train_size < masks.shape[-1]:
        known = ~torch.isnan(masks)
        masks = F.adaptive_avg_pool2d(torch.nan_to_num(masks), train_size)
        masks[~known[..., :1, :1].expand_as(masks)] = float("nan")
    torch.manual_seed(seed)
    model = decoder(x.shape[1], masks.shape[1], kind)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2 if kind == "linear" else 3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=gen)
        logits = F.interpolate(model(x[idx]), size=masks.shape[-2:], mode="bilinear", align_corners=False)
        loss = masked_loss(logits, masks[idx])
        optim.zero_grad()
        loss.backward()
        optim.step()
    return model.eval()


@TASKS.register("segmentation", "linear (1x1 conv) decoder on frozen patch tokens; Dice and IoU per mask, with CI")
def segmentation(ctx: EvalContext) -> dict:
    structures = ctx.option_list("structures", None) or [c[len(MASK_PREFIX):] for c in ctx.table.mask_columns]
    if not structures:
        raise TaskSkipped("the records carry no mask_<structure> columns")
    ctx.require_images(("train", "test"))
    size = ctx.encoder.preprocess.image_size
    x = {s: token_grid(ctx, s) for s in ("train", "test")}
    mean, std = x["train"].mean((0, 2, 3), keepdim=True), nonzero(x["train"].std((0, 2, 3), keepdim=True))
    x = {s: (v - mean) / std for s, v in x.items()}
    masks = {s: torch.from_numpy(load_masks(ctx, ctx.rows(s), structures)) for s in x}
    trained = (~torch.isnan(masks["train"][:, :, 0, 0])).any(0).tolist()
    untrained = [name for name, ok in zip(structures, trained, strict=True) if not ok]
    if untrained:
        structures = [name for name, ok in zip(structures, trained, strict=True) if ok]
        if not structures:
            raise TaskSkipped("no training record has a mask")
        masks = {s: m[:, torch.tensor(trained)] for s, m in masks.items()}
    kind = ctx.option("decoder", "linear")
    train_size = int(ctx.option("train_size", 4 * max(x["train"].shape[-2:])))
    model = train_decoder(x["train"], masks["train"], kind, int(ctx.option("steps", 300)), ctx.seed,
                          train_size=train_size)
    with torch.no_grad():
        logits = F.interpolate(model(x["test"]), size=(size, size), mode="bilinear", align_corners=False)
    predicted = (logits > 0).numpy()
    mean_mask = np.nanmean(masks["train"].numpy(), axis=0) > 0.5
    test_patients = ctx.patients(ctx.rows("test"))
    out: dict = {"decoder": kind, "train_size": train_size, "structures": {}, "untrained": untrained}
    for s, name in enumerate(structures):
        truth = masks["test"][:, s].numpy()
        known = ~np.isnan(truth[:, 0, 0])
        if not known.any():
            continue
        dice, iou = dice_iou(truth[known], predicted[known, s])
        base, _ = dice_iou(truth[known], np.broadcast_to(mean_mask[s], truth[known].shape))
        empty, _ = dice_iou(truth[known], np.zeros_like(truth[known]))  # Dice 1 on every empty truth mask
        patients = test_patients[known]
        out["structures"][name] = {
            "dice": float(dice.mean()), "iou": float(iou.mean()), "n_test": int(known.sum()),
            "dice_ci": ctx.interval(f"dice_{name}", lambda i, d=dice: float(d[i].mean()), patients),
            "iou_ci": ctx.interval(f"iou_{name}", lambda i, v=iou: float(v[i].mean()), patients),
            "mean_mask_dice": float(base.mean()), "all_zero_dice": float(empty.mean())}
    if not out["structures"]:
        raise TaskSkipped("no test record has a mask")
    out["mean_dice"] = float(np.mean([v["dice"] for v in out["structures"].values()]))
    out["mean_iou"] = float(np.mean([v["iou"] for v in out["structures"].values()]))
    return out
