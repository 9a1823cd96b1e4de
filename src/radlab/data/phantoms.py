"""Synthetic chest X-ray phantoms with known findings, masks and reports: radlab's built-in default data.

Images follow the radiological convention: the patient's right is on the image left, so the heart bulges to
the image right and a "left" finding is drawn on the image right. Geometry is in fractions of the image side
(x to the right, y down), so every size draws the same picture. Each patient has fixed anatomy (sex and age
change it); each study adds a small shift, rotation and exposure change and its own findings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from radlab.data import phantom_reports as reports
from radlab.data.phantom_reports import PHANTOM_FINDINGS, Lesion
from radlab.data.records import RecordTable, label_column
from radlab.progress import tracked

__all__ = ["PHANTOM_FINDINGS", "Anatomy", "Lesion", "Study", "render", "sample_anatomy", "sample_study",
           "synthesize"]

AP_RATE = 0.2
SIGN = {"right": -1.0, "left": 1.0}
CM = 0.023
_COS, _SIN = math.cos(0.6), math.sin(0.6)


@dataclass(frozen=True)
class Anatomy:
    """One patient's body; lengths are fractions of the image side.

    thorax: half the distance between the outer lung edges; apex, dome: heights of the lung apices and of the
    right hemidiaphragm (the left one sits lower); ctr: cardiothoracic ratio without cardiomegaly;
    rib_contrast: bone density; soft, air: soft-tissue brightness and how much darker aerated lung is;
    breast: breast-shadow strength (0 for men); knuckle: aortic knuckle radius; texture: lung-marking seed.
    """

    sex: str
    age: float
    thorax: float
    apex: float
    dome: float
    mediastinum: float
    ctr: float
    rib_spacing: float
    rib_phase: float
    rib_contrast: float
    soft: float
    air: float
    breast: float
    knuckle: float
    texture: int


@dataclass(frozen=True)
class Study:
    """One acquisition: view, patient position jitter and exposure."""

    view: str = "PA"
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    angle: float = 0.0
    gain: float = 1.0
    offset: float = 0.0
    gamma: float = 1.0
    noise: float = 0.012


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Men have wider, taller lungs; age enlarges the heart and aortic knuckle and thins the bones."""
    sex = "M" if rng.random() < 0.5 else "F"
    male = sex == "M"
    age = float(np.clip(np.round(rng.normal(57, 16)), 20, 90))
    old = (age - 20) / 70
    return Anatomy(
        sex=sex, age=age,
        thorax=(0.355 if male else 0.325) + 0.012 * float(rng.standard_normal()),
        apex=0.11 + 0.008 * float(rng.standard_normal()),
        dome=(0.765 if male else 0.73) + 0.015 * float(rng.standard_normal()),
        mediastinum=0.05 + 0.005 * float(rng.standard_normal()),
        ctr=float(np.clip(0.395 + 0.06 * old + 0.016 * rng.standard_normal(), 0.34, 0.48)),
        rib_spacing=0.074 + 0.005 * float(rng.standard_normal()),
        rib_phase=float(rng.random()),
        rib_contrast=max(0.04, (0.17 if male else 0.155) * (1 - 0.45 * old) + 0.01 * float(rng.standard_normal())),
        soft=0.6 + 0.04 * float(rng.standard_normal()),
        air=0.36 + 0.035 * float(rng.standard_normal()),
        breast=0.0 if male else float(rng.uniform(0.5, 1.2)),
        knuckle=0.02 + 0.016 * old + 0.003 * float(rng.standard_normal()),
        texture=int(rng.integers(2**31)),
    )


def sample_study(rng: np.random.Generator) -> Study:
    """PA for most studies, AP for about one in five; small positioning and exposure jitter."""
    view = "AP" if rng.random() < AP_RATE else "PA"
    jitter = rng.standard_normal(7).tolist()
    return Study(view=view, dx=0.01 * jitter[0], dy=0.01 * jitter[1], scale=1 + 0.015 * jitter[2],
                 angle=0.02 * jitter[3], gain=1 + 0.04 * jitter[4], offset=0.02 * jitter[5],
                 gamma=float(np.exp(0.06 * jitter[6])), noise=float(rng.uniform(0.006, 0.018)))


def _dist(x: np.ndarray, y: np.ndarray, points: list[tuple[float, float]]) -> np.ndarray:
    """Distance from every pixel to a polyline."""
    p = np.asarray(points, dtype=np.float32)[:, :, None, None]
    a, d = p[:-1], p[1:] - p[:-1]
    rx, ry = x - a[:, 0], y - a[:, 1]
    t = np.clip((rx * d[:, 0] + ry * d[:, 1]) / np.maximum(d[:, 0] ** 2 + d[:, 1] ** 2, 1e-12), 0, 1)
    return np.hypot(rx - t * d[:, 0], ry - t * d[:, 1]).min(axis=0)


def _noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), sigma * size)
    return field / (field.std() + 1e-9)


def _ridges(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """A network of thin lines (zero crossings of band-pass noise), like vessels or septal lines."""
    white = rng.standard_normal((size, size), dtype=np.float32)
    band = gaussian_filter(white, sigma * size) - gaussian_filter(white, 2.5 * sigma * size)
    return np.exp(-((band / (band.std() + 1e-9)) / 0.45) ** 2)


def _bands(phase: np.ndarray, half: float) -> np.ndarray:
    return np.clip((half - np.abs(phase - np.round(phase))) / 0.07, 0, 1)


@dataclass
class _Body:
    x: np.ndarray
    y: np.ndarray
    size: int
    width: float
    a: float
    b: float
    cy: float
    dome: dict[str, float]
    cx: dict[str, float]
    field: dict[str, np.ndarray]
    heart: np.ndarray
    heart_box: tuple[float, float, float, float]

    def zone(self, lesion: Lesion, anatomy: Anatomy, rng: np.random.Generator) -> tuple[float, float]:
        frac = {"upper": (0.3, 0.45), "middle": (0.55, 0.55), "lower": (0.78, 0.62)}[lesion.zone or "middle"]
        m = anatomy.mediastinum
        zx = 0.5 + SIGN[lesion.side] * (m + frac[1] * (self.width - m)) + 0.015 * rng.standard_normal()
        zy = anatomy.apex + frac[0] * (self.dome["right"] - anatomy.apex) + 0.015 * rng.standard_normal()
        return float(zx), float(zy)


def _body(anatomy: Anatomy, findings: dict[str, Lesion], size: int, study: Study) -> _Body:
    p = ((np.arange(size) + 0.5) / size - 0.5).astype(np.float32)
    py, px = np.meshgrid(p - study.dy, p - study.dx, indexing="ij")
    c, s = math.cos(study.angle), math.sin(study.angle)
    x, y = (c * px + s * py) / study.scale + 0.5, (c * py - s * px) / study.scale + 0.5
    w, m = anatomy.thorax, anatomy.mediastinum
    a, dome_r = 0.6 * w, anatomy.dome - (0.02 if study.view == "AP" else 0.0)
    dome = {"right": dome_r, "left": dome_r + 0.02}
    b = (dome_r - anatomy.apex) / 1.5
    cy = anatomy.apex + b
    ctr = anatomy.ctr
    if "cardiomegaly" in findings:
        ctr = {1: 0.555, 2: 0.6, 3: 0.66}[findings["cardiomegaly"].severity] + 0.3 * (anatomy.ctr - 0.41)
    ha = ctr * w * (1.1 if study.view == "AP" else 1.0)
    major = ha / math.hypot(_COS, 0.75 * _SIN)
    hb = major * math.hypot(_SIN, 0.75 * _COS)
    hx, hy = 0.5 + ha / 3, dome["left"] + 0.01 - 0.45 * hb
    u, v = _COS * (x - hx) + _SIN * (y - hy), _COS * (y - hy) - _SIN * (x - hx)
    heart = ((u / major) ** 2 + (v / (0.75 * major)) ** 2 < 1) & (y < dome["left"] + 0.01)
    kn = anatomy.knuckle
    knuckle = np.hypot(x - (0.5 + m + 0.4 * kn), y - (anatomy.apex + 0.15)) < kn
    cx = {side: 0.5 + sign * (w - a) for side, sign in SIGN.items()}
    field = {side: (((x - cx[side]) / a) ** 2 + ((y - cy) / b) ** 2 < 1)
             & (y < dome[side] + 0.1 * ((x - cx[side]) / a) ** 2) & (sign * (x - 0.5) > m) & ~heart & ~knuckle
             for side, sign in SIGN.items()}
    return _Body(x, y, size, w, a, b, cy, dome, cx, field, heart, (hx, hy, ha, hb))


def _anatomy_layer(g: _Body, anatomy: Anatomy, study: Study) -> np.ndarray:
    """Soft tissue, bones, mediastinum, heart and breasts; lung air is subtracted later."""
    x, y, w, m = g.x, g.y, g.width, anatomy.mediastinum
    t = np.abs(x - 0.5)
    half = 0.11 + (w - 0.035) * np.sqrt(np.clip((y - 0.01) / 0.16, 0, 1)) - 0.05 * np.clip(y - 0.75, 0, 1)
    inside = np.clip(1 - (t / half) ** 2, 0, 1)
    img = 0.03 + (inside > 0) * (anatomy.soft * (0.8 + 0.2 * np.sqrt(inside)) - 0.03)
    hx, hy, ha, hb = g.heart_box
    img += 0.02 * g.heart + 0.03 * ((t < m) & (y < hy)) + 0.04 * (t < 0.03) * (0.7 + 0.3 * np.cos(y * 125))
    img -= 0.12 * ((t < 0.017) & (y < anatomy.apex + 0.21))
    kn = anatomy.knuckle
    img += 0.06 * (np.hypot(x - (0.5 + m + 0.4 * kn), y - (anatomy.apex + 0.15)) < kn)
    thorax = (t < w + 0.03) & (t > 0.03) & (y > anatomy.apex - 0.04) & (y < g.dome["left"] + 0.1)
    ribs = _bands((y + 0.6 * t - 3.2 * t**2) / anatomy.rib_spacing + anatomy.rib_phase, 0.2)
    ribs += 0.35 * _bands((y + 0.7 * t) / (1.3 * anatomy.rib_spacing) + anatomy.rib_phase, 0.15)
    img += anatomy.rib_contrast * ribs * thorax * (0.45 + 0.55 * (g.field["right"] | g.field["left"]))
    lift = 0.03 if study.view == "AP" else 0.0
    for sign in SIGN.values():
        clav = _dist(x, y, [(0.5 + sign * 0.045, anatomy.apex + 0.05 - lift),
                            (0.5 + sign * (w + 0.03), anatomy.apex - 0.035 - lift)])
        img += 1.2 * anatomy.rib_contrast * np.clip((0.016 - clav) * g.size + 0.5, 0, 1) * (inside > 0)
        img += 0.06 * np.exp(-((x - 0.5 - sign * (m + 0.035)) ** 2 + (y - g.cy + 0.02) ** 2) / 0.0018)
        breast = ((x - 0.5 - sign * 0.62 * w) / (0.42 * w)) ** 2 + ((y - g.dome["right"] + 0.02) / 0.11) ** 2
        img += 0.08 * anatomy.breast * np.sqrt(np.clip(1 - breast, 0, 1))
    bubble = ((x - 0.5 - 0.5 * w) / 0.05) ** 2 + ((y - g.dome["left"] - 0.06) / 0.025) ** 2 < 1
    return img - 0.15 * bubble


def _devices(g: _Body, lesion: Lesion, anatomy: Anatomy) -> np.ndarray:
    x, y, apex = g.x, g.y, anatomy.apex
    hx, hy, ha, hb = g.heart_box
    paths: list[tuple[float, list[tuple[float, float]]]] = []
    if "ett" in lesion.devices:
        paths.append((0.3, [(0.5, -0.05), (0.503, apex + 0.22 - lesion.tube_cm * CM)]))
    if "cvc" in lesion.devices:
        paths.append((0.25, [(0.4, -0.02), (0.44, apex + 0.04), (0.47, apex + 0.2)]))
    out = np.zeros_like(x)
    if "pacemaker" in lesion.devices:
        bx, by = 0.5 + 0.72 * g.width, apex + 0.08
        out += 0.5 * np.clip((0.04 - np.abs(x - bx)) * g.size + 0.5, 0, 1) * np.clip(
            (0.028 - np.abs(y - by)) * g.size + 0.5, 0, 1)
        paths.append((0.35, [(bx - 0.03, by + 0.01), (0.48, apex + 0.1), (0.46, apex + 0.2),
                             (0.47, hy - 0.2 * hb), (hx + 0.2 * ha, hy + 0.4 * hb)]))
    for strength, points in paths:
        out += strength * np.clip((0.005 - _dist(x, y, points)) * g.size + 0.5, 0, 1)
    return out


def render(anatomy: Anatomy, findings: dict[str, Lesion], size: int = 128,
           rng: np.random.Generator | None = None, study: Study | None = None
           ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw one study: a uint8 image [size, size] and boolean ``lungs`` and ``heart`` masks.

    The lung mask is the anatomical lung field (heart and aortic knuckle excluded); fluid and pleural air
    stay inside it.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    study = study or Study()
    g = _body(anatomy, findings, size, study)
    x, y = g.x, g.y
    lungs = g.field["right"] | g.field["left"]
    depth = np.clip((y - anatomy.apex) / (g.dome["right"] - anatomy.apex), 0, 1)
    air = lungs * anatomy.air * (0.88 + 0.17 * depth)
    hilum = np.minimum(*(np.hypot(x - 0.5 - sign * (anatomy.mediastinum + 0.04), y - g.cy + 0.03)
                         for sign in (-1, 1)))
    marks = _ridges(np.random.default_rng(anatomy.texture), size, 0.008) * np.exp(-hilum / 0.2) * lungs
    vis, add = np.ones_like(x), np.zeros_like(x)
    for name, lesion in findings.items():
        sev, sides = lesion.severity, ["left", "right"] if lesion.side == "bilateral" else [lesion.side]
        if name == "pleural_effusion":
            for side in sides:
                lat = np.clip((SIGN[side] * (x - g.cx[side]) / g.a + 1) / 2, 0, 1)
                level = g.dome[side] - {1: 0.07, 2: 0.16, 3: 0.28}[sev] - 0.08 * lat**2
                fluid = np.clip((y - level) / 0.025, 0, 1) * g.field[side]
                air, vis = air * (1 - 0.93 * fluid), vis * (1 - fluid)
        elif name == "pneumothorax":
            side, f = lesion.side, {1: 0.89, 2: 0.77, 3: 0.6}[sev]
            ccx, ccy = g.cx[side] - SIGN[side] * (1 - f) * g.a, g.cy + (1 - f) * g.b
            r = np.sqrt(((x - ccx) / (f * g.a)) ** 2 + ((y - ccy) / (f * g.b)) ** 2)
            gap = g.field[side] & (r > 1)
            air = air + 0.15 * gap - 0.05 * (g.field[side] & (r <= 1))
            vis = vis * ~gap
            add += 0.14 * np.exp(-(((r - 1) * f * g.a * size) / 0.7) ** 2) * g.field[side]
        elif name in ("consolidation", "lung_opacity"):
            zx, zy = g.zone(lesion, anatomy, rng)
            solid = name == "consolidation"
            r = {1: 0.065, 2: 0.09, 3: 0.115}[sev] * (1.0 if solid else 1.3)
            q = ((x - zx) / (1.25 * r)) ** 2 + ((y - zy) / r) ** 2
            if solid:
                patch = np.exp(-(q**1.5)) * (0.6 + 0.4 * np.clip(0.5 + 0.5 * _noise(rng, size, 0.02), 0, 1))
                air = air * (1 - {1: 0.6, 2: 0.75, 3: 0.9}[sev] * patch)
            else:
                air = air * (1 - {1: 0.3, 2: 0.4, 3: 0.5}[sev] * np.exp(-q))
        elif name == "nodule":
            zx, zy = g.zone(lesion, anatomy, rng)
            for k in range(lesion.count):
                nx, ny = (zx, zy) if k == 0 else (zx, zy) + 0.05 * rng.standard_normal(2)
                rad = (0.018 + 0.001 * lesion.size_mm) * (1.0 if k == 0 else rng.uniform(0.6, 0.9))
                add += 0.35 * np.sqrt(np.clip(1 - (np.hypot(x - nx, y - ny) / rad) ** 2, 0, 1))
        elif name == "edema":
            haze = sum(np.exp(-(((x - 0.5 - sign * (anatomy.mediastinum + 0.07)) / 0.11) ** 2
                                + ((y - g.cy + 0.02) / 0.15) ** 2)) for sign in (-1, 1))
            air = air * (1 - {1: 0.25, 2: 0.4, 3: 0.55}[sev] * np.clip(haze, 0, 1))
            septal = _ridges(rng, size, 0.006) * (0.3 + 0.7 * depth)
            kerley = (np.abs((y / 0.018) % 1 - 0.5) < 0.12) & (np.abs(x - 0.5) > g.width - 0.06) & (y > g.cy)
            add += (0.05 * septal + 0.04 * kerley) * sev * lungs
            vis = vis * (1 + 0.3 * sev)
        elif name == "support_devices":
            add += _devices(g, lesion, anatomy)
    img = _anatomy_layer(g, anatomy, study) - air + 0.13 * marks * vis + add
    img = gaussian_filter(img, 0.5 * size / 128 + 0.2)
    img = np.clip(img, 0, 1) ** study.gamma * study.gain + study.offset
    img = img + study.noise * rng.standard_normal(img.shape, dtype=np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), {"lungs": lungs, "heart": g.heart}


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _plan(n: int, seed: int, studies_per_patient: float) -> list[tuple[int, int, Anatomy]]:
    """(patient index, study index, anatomy) for n studies; patient i depends only on (seed, i)."""
    plan: list[tuple[int, int, Anatomy]] = []
    patient = 0
    while len(plan) < n:
        rng = _rng(seed, patient)
        studies = 1 + int(rng.poisson(max(studies_per_patient - 1.0, 0.0)))
        anatomy = sample_anatomy(rng)
        plan.extend((patient, j, anatomy) for j in range(studies))
        patient += 1
    return plan[:n]


def synthesize(out_dir: Path | str, n: int = 2000, size: int = 128, seed: int = 0,
               studies_per_patient: float = 2.0, progress: bool = False) -> RecordTable:
    """Draw n phantom studies into out_dir (images/, masks/, records.parquet) and return the table. Patient ids
    carry the seed (``P3-00012``), seed 0's excepted (``P00012``, as first written), so phantom sets of different
    seeds share no patient id (a leakage check would call them the same patients)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    out = Path(out_dir)
    for folder in ("images", "masks"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    planned = _plan(n, seed, studies_per_patient)
    plan: Iterable[tuple[int, int, Anatomy]] = tracked(planned, len(planned), "Drawing phantoms") if progress else planned
    records: list[dict[str, Any]] = []
    for patient, j, anatomy in plan:
        rng = _rng(seed, patient, j)
        study = sample_study(rng)
        findings = reports.sample_findings(rng)
        findings_text, impression = reports.write_report(findings, rng)
        image, masks = render(anatomy, findings, size, rng, study)
        patient_id = f"P{patient:05d}" if seed == 0 else f"P{seed}-{patient:05d}"
        study_id = f"{patient_id}_S{j + 1}"
        image_id = f"{study_id}_{study.view}"
        Image.fromarray(image).save(out / "images" / f"{image_id}.png")
        record: dict[str, Any] = {
            "id": image_id, "image_path": f"images/{image_id}.png", "source": "phantom",
            "patient_id": patient_id, "study_id": study_id, "view": study.view, "split": "",
            "sex": anatomy.sex, "age": anatomy.age, "findings": findings_text, "impression": impression,
            "report": f"FINDINGS: {findings_text} IMPRESSION: {impression}",
        }
        for structure, mask in masks.items():
            Image.fromarray(mask.astype(np.uint8) * 255).save(out / "masks" / f"{image_id}_{structure}.png")
            record[f"mask_{structure}"] = f"masks/{image_id}_{structure}.png"
        record.update({label_column(k): v for k, v in reports.finding_labels(findings).items()})
        records.append(record)
    RecordTable.from_records(records, root=out).write(out)
    return RecordTable.read(out)
