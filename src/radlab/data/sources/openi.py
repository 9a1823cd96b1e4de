"""OpenI / IU X-ray in the NLM release layout: one XML report per study, with MeSH tags.

ROOT holds ``ecgen-radiology/<n>.xml`` (from NLMCXR_reports.tgz) and, optionally, the PNGs of
NLMCXR_png.tgz in ``NLMCXR_png/`` (or ``images/``), named by each ``parentImage`` id (``CXR1_1_IM-0001-3001.png``).
Report sections are the ``AbstractText`` elements (FINDINGS, IMPRESSION, ...); labels come from the
``<MeSH><major>`` terms through the IU X-ray MeSH mapping (``iu_xray.mesh_labels``: expert-coded, so an
untagged finding is negative; a report tagged only "No Indexing" or "Technical Quality of Image
Unsatisfactory" is unlabelled, all NaN). The XML does not say which image is frontal or lateral, so ``view``
is ''.
Patients use the IU X-ray ids (``iu<IUXRId>``), so overlap with the two-CSV IU X-ray form is visible to
the audit.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from radlab.data.records import RecordTable, label_column
from radlab.data.reports import full_report
from radlab.data.sources.base import SOURCES, Source
from radlab.data.sources.common import SourceFormatError, finish
from radlab.data.sources.iu_xray import MESH_MAP, mesh_labels

LABEL_MAP: dict[str, str] = MESH_MAP  # the IU X-ray MeSH mapping, reused (see iu_xray.py)
IMAGE_FOLDERS = ("NLMCXR_png", "images")


def parse_report(path: Path) -> dict[str, object]:
    """One XML file -> uid, sections, MeSH major terms and image ids."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as err:
        raise SourceFormatError(f"{path}: not well-formed XML ({err})") from err
    uid = tree.find("IUXRId")
    if uid is None or not uid.get("id"):
        raise SourceFormatError(f"{path}: no <IUXRId id=...> element")
    sections = {(e.get("Label") or "").upper(): " ".join((e.text or "").split())
                for e in tree.iter("AbstractText")}
    return {"uid": uid.get("id"), "sections": sections,
            "mesh": [(e.text or "").strip() for e in tree.iterfind("MeSH/major") if (e.text or "").strip()],
            "images": [e.get("id") for e in tree.iter("parentImage") if e.get("id")]}


@SOURCES.register("openi", "OpenI / IU X-ray XML reports (ecgen-radiology) with MeSH tags; PNG")
class OpenISource(Source):
    name = "openi"
    markers = ("ecgen-radiology",)
    label_map = LABEL_MAP

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        folder = self.require(root / "ecgen-radiology")
        image_dir = next((root / f for f in IMAGE_FOLDERS if (root / f).is_dir()), root / IMAGE_FOLDERS[0])
        records = []
        for path in sorted(folder.glob("*.xml"), key=lambda p: (len(p.stem), p.stem)):
            report = parse_report(path)
            sections = report["sections"]
            findings, impression = sections.get("FINDINGS", ""), sections.get("IMPRESSION", "")
            uid = f"iu{report['uid']}"
            base = {
                "source": self.name, "patient_id": uid, "study_id": uid, "findings": findings,
                "impression": impression, "report": full_report(findings, impression),
                **{label_column(k): v for k, v in mesh_labels(";".join(report["mesh"])).items()},
            }
            if not report["images"]:
                records.append({**base, "id": f"openi_{uid}", "image_path": ""})
            for image in report["images"]:
                records.append({**base, "id": f"openi_{image}",
                                "image_path": str((image_dir / f"{image}.png").relative_to(root))})
        if not records:
            raise SourceFormatError(f"{folder}: no XML reports found")
        return finish(records, root, str(folder))
