"""Did the encoder pre-train on the evaluation's test patients? ``radlab eval`` asks before it reports:
leakage is checked, never assumed.

A radlab checkpoint records its training config. The records it pre-trained on are rebuilt from it (its
sources, split settings and train subset: ``train.setup.pretraining_tables``) and audited against the test
split (``data.audit.audit``): shared patient ids and, where a pre-training and an evaluation source can hold
the same images under unrelated ids (NIH and RSNA/SIIM), exact and near-duplicate images. A run continued from
another radlab checkpoint (``init_from``, ``model.external``) is followed back through it. What cannot be
checked is listed, never taken as clean: public encoders (their pre-training data are not known here), image
towers started from a weights file, pretrained text towers (CXR-BERT read MIMIC-CXR reports), checkpoints
without a training config, pre-training data not found on this machine, images that cannot be read, and
records that are no longer those the checkpoint trained on (its ``trained_on`` digest). A run
that stopped early chose its weights on its validation split, whose patients are audited too
(``selected_on_patients``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import ValidationError

from radlab.data.audit import LeakageError, audit, share_images, tables_share_images
from radlab.data.records import RecordTable
from radlab.models import ENCODERS, load_encoder
from radlab.models.checkpoint import SPEC_FILE, read_spec
from radlab.models.external.xrv import training_sources
from radlab.train.config import TrainConfig
from radlab.train.setup import pretraining_tables

log = logging.getLogger(__name__)

# What public encoders were pre-trained on, as their papers and model cards state, by radlab source name (images
# of sources with the same ``image_origin``, e.g. RSNA and SIIM's NIH images, count too). Splits are not known.
PUBLIC_PRETRAINING: dict[str, tuple[str, ...]] = {
    "rad-dino": ("mimic_cxr", "chexpert", "nih", "padchest"),  # and BRAX (Perez-Garcia et al. 2025)
    "chexzero": ("mimic_cxr",),  # Tiu et al. 2022
    "biovil": ("mimic_cxr",),  # Boecking et al. 2022
    "gloria": ("chexpert",),  # Huang et al. 2021
    "medclip": ("mimic_cxr", "chexpert"),  # Wang et al. 2022
}
# Pretrained text towers that read chest X-ray reports (what text tasks on those sources would flatter).
PUBLIC_TEXT_PRETRAINING: dict[str, tuple[str, ...]] = {"cxr_bert": ("mimic_cxr",)}  # Boecking et al. 2022


@dataclass
class PretrainingOverlap:
    """Counts only (patient ids can come from DICOM PatientID); ``radlab data audit`` lists them."""

    test_patients: int
    checked: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    shared_patients: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    selected_on_patients: int = 0  # test patients of an early-stopped run's validation split
    near_candidates: int = 0  # test images alike in outline only to pre-training images (not counted as overlap)

    def clean(self) -> bool:
        return not (self.shared_patients or self.exact_duplicates or self.near_duplicates or self.selected_on_patients)

    def as_dict(self) -> dict:
        return asdict(self)

    def message(self, encoder: str) -> str:
        selected = (f"; it chose its weights (early stopping) on {self.selected_on_patients} of them"
                    if self.selected_on_patients else "")
        return (f"{encoder} pre-trained on {self.shared_patients} of the {self.test_patients} test patients "
                f"({self.exact_duplicates} exact and {self.near_duplicates} near-duplicate test images) of this "
                f"evaluation{selected}")


def public_pretraining(name: str, path: str) -> tuple[str, ...]:
    """The sources a public encoder pre-trained on: its paper's (``PUBLIC_PRETRAINING``), or for torchxrayvision
    weights the datasets their file name lists; () when unknown."""
    if name == "xrv":
        return training_sources(path)
    return PUBLIC_PRETRAINING.get(name, ())


def public_encoder_note(name: str, spec: str, test_sources: set[str]) -> str:
    """Why a public encoder cannot be checked, naming the evaluation's sources among its pre-training data."""
    known = public_pretraining(name, spec.partition(":")[2])
    if not known:
        return f"{spec}: a public encoder, whose pre-training data are not known here"
    shared = sorted(t for t in test_sources if any(t == k or share_images(t, k) for k in known))
    if not shared:
        return f"{spec}: a public encoder pre-trained on {', '.join(known)}, none of this evaluation's sources"
    return (f"{spec}: a public encoder pre-trained on {', '.join(known)}; its split of {', '.join(shared)} is not "
            "known here, so unless this test split is the provider's held-out one its figures may be optimistic")


def pretraining_runs(spec: str | Path, unchecked: list[str], test_sources: set[str],
                     seen: set[Path] | None = None) -> list[tuple[Path, TrainConfig]]:
    """The training configs behind an encoder, followed back through the radlab checkpoints it continued;
    what cannot be followed goes to ``unchecked`` with the reason."""
    seen = set() if seen is None else seen
    name, sep, path = str(spec).partition(":")
    if sep and name in ENCODERS:
        if name != "radlab":
            unchecked.append(public_encoder_note(name, str(spec), test_sources))
            return []
        spec = path
    folder = Path(spec).resolve()
    if folder in seen:
        return []
    seen.add(folder)
    if not (folder / SPEC_FILE).is_file():
        unchecked.append(f"{spec}: not a radlab checkpoint folder here")
        return []
    raw = read_spec(folder).get("train_config")
    if raw is None:
        unchecked.append(f"{spec}: the checkpoint records no training config")
        return []
    try:
        cfg = TrainConfig.model_validate(raw)
    except ValidationError as err:
        unchecked.append(f"{spec}: its training config does not validate ({err.error_count()} errors)")
        return []
    unchecked.extend(starting_tower_notes(cfg, str(spec)))
    parent = cfg.init_from or cfg.model.external
    return [(folder, cfg), *(pretraining_runs(parent, unchecked, test_sources, seen) if parent else [])]


def starting_tower_notes(cfg: TrainConfig, spec: str) -> list[str]:
    """What a run's towers started from that this check cannot follow: an image tower's weights file, a
    pretrained text tower that read chest X-ray reports."""
    notes = []
    image = cfg.model.image_tower
    if image.kwargs.get("checkpoint_path"):
        notes.append(f"{spec}: its image tower started from {image.kwargs['checkpoint_path']}, whose pre-training "
                     "data are not known here")
    text = cfg.model.text_tower
    if text is not None and text.name in PUBLIC_TEXT_PRETRAINING:
        notes.append(f"{spec}: its text tower {text.name} was pre-trained on reports of "
                     f"{', '.join(PUBLIC_TEXT_PRETRAINING[text.name])}; their split is not known here")
    return notes


def unchanged(folder: Path, train: RecordTable, unchecked: list[str]) -> None:
    """Whether the records rebuilt from a checkpoint's config are those it trained on (``trained_on`` in its
    spec); if not (data edited in place, or a relative path resolved elsewhere), the check runs on today's
    records and says so."""
    then = read_spec(folder).get("trained_on")
    now = train.digest()
    if then is not None and then["sha256"] != now["sha256"]:
        unchecked.append(f"{folder}: the records its config gives today ({now['records']} of {now['patients']} "
                         f"patients) are not those it trained on ({then['records']} of {then['patients']}): data "
                         "edited, moved or found elsewhere since; the check ran on today's")


def require_checkpoint(spec: str | Path) -> None:
    """For a ``spec`` that names a radlab checkpoint folder (a path, or ``radlab:PATH``) that is not one (a wrong
    path): the error loading it raises, before the leakage check, which would only note it as not checked.
    Other formats' paths are checked by their loaders."""
    name, sep, path = str(spec).partition(":")
    if sep and name in ENCODERS and name != "radlab":
        return
    folder = Path(path if sep and name == "radlab" else spec)
    if not (folder / SPEC_FILE).is_file():
        load_encoder(spec)  # raises what the evaluation would: no such format, or not a radlab checkpoint


def check_pretraining(spec: str | Path, table: RecordTable, data_root: str | None = None,
                      workers: int = 0) -> PretrainingOverlap:
    """How much of ``table``'s test split the encoder ``spec`` (checkpoint folder or FORMAT:PATH) pre-trained on;
    a wrong checkpoint path is an error (``require_checkpoint``)."""
    require_checkpoint(spec)
    test = table.split("test")
    test_sources = set(test.frame["source"])
    result = PretrainingOverlap(int(test.frame["patient_id"].nunique()))
    patients: set[str] = set()
    selected_on: set[str] = set()
    exact: set[str] = set()
    near: set[str] = set()
    alike: set[str] = set()
    for folder, cfg in pretraining_runs(spec, result.unchecked, test_sources):
        try:
            records, train = pretraining_tables(cfg, data_root)
        except FileNotFoundError as err:
            result.unchecked.append(f"{folder}: its pre-training data are not here ({err})")
            continue
        unchanged(folder, train, result.unchecked)
        report = audit(train, {"test": test}, images=tables_share_images(train, test), workers=workers)
        overlap = report.overlaps[0]
        if report.unreadable:
            result.unchecked.append(f"{folder}: {len(report.unreadable)} of its pre-training images cannot be read, "
                                    "so they were not compared with the test images")
        patients |= set(overlap.shared_patients)
        exact |= {b for _, b in overlap.exact_duplicates}
        near |= {b for _, b, _ in overlap.near_duplicates}
        alike |= set(overlap.near_candidate_ids)
        if cfg.early_stopping is not None:
            selected_on |= set(records.split("val").frame["patient_id"]) & set(test.frame["patient_id"])
        result.checked.append(", ".join(f"{s.source}:{s.path}" for s in cfg.data.sources) + f" (of {folder})")
    result.shared_patients, result.exact_duplicates, result.near_duplicates = len(patients), len(exact), len(near - exact)
    result.selected_on_patients, result.near_candidates = len(selected_on), len(alike - near - exact)
    return result


def refuse_pretraining_overlap(spec: str | Path, table: RecordTable, force: bool = False,
                               data_root: str | None = None, workers: int = 0) -> PretrainingOverlap:
    """``check_pretraining``, raising LeakageError on any overlap unless ``force`` (then a logged warning)."""
    found = check_pretraining(spec, table, data_root, workers)
    if not found.clean():
        if not force:
            raise LeakageError(found.message(str(spec)))
        log.warning("%s (forced: reporting anyway)", found.message(str(spec)))
    return found
