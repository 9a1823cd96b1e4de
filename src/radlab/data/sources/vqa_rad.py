"""VQA-RAD in its public release layout: ``VQA_RAD Dataset Public.json`` + ``VQA_RAD Image Folder/``.

One record per question (``id`` = qid), with columns ``question``, ``answer``, ``answer_type`` (closed or
open) and ``question_type``. ``phrase_type`` "test_freeform" / "test_para" mark the official test questions;
the rest are train. The release has no patient ids, so an image stands for its patient (bootstrap unit).
The official split is by question: most test questions ask about images that train questions also cover, so
the source declares ``split_unit = "question"`` and splitting keeps it as given (see ``radlab.data.splits``).
"""

from __future__ import annotations

import json
from pathlib import Path

from radlab.data.records import RecordTable
from radlab.data.sources.base import SOURCES, Source

ANNOTATIONS = "VQA_RAD Dataset Public.json"
IMAGE_FOLDER = "VQA_RAD Image Folder"
REQUIRED = ("image_name", "question", "answer", "answer_type")


def answer_text(value: object) -> str:
    """Answers as lower-case stripped text without a trailing full stop ("Yes." -> "yes")."""
    return str(value).strip().lower().rstrip(".").strip()


def qa_record(qid: str, image: str, image_path: str, question: str, answer: object, answer_type: str,
              split: str, question_type: str = "", source: str = "") -> dict:
    return {"id": qid, "image_path": image_path, "source": source, "patient_id": image, "study_id": image,
            "split": split, "question": str(question).strip(), "answer": answer_text(answer),
            "answer_type": str(answer_type).strip().lower(), "question_type": str(question_type).strip()}


@SOURCES.register("vqa_rad", "VQA-RAD release (VQA_RAD Dataset Public.json + image folder): one record per question")
class VQARadSource(Source):
    name = "vqa_rad"
    markers = (ANNOTATIONS,)
    split_unit = "question"

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        entries = json.loads(self.require(root / ANNOTATIONS).read_text(encoding="utf-8"))
        records = []
        for n, entry in enumerate(entries):
            missing = [k for k in REQUIRED if k not in entry]
            if missing:
                raise ValueError(f"{root / ANNOTATIONS}: entry {n}: missing key(s) {missing}")
            split = "test" if str(entry.get("phrase_type", "")).startswith("test") else "train"
            qid = f"vqarad_{entry.get('qid', n)}_{n}"
            records.append(qa_record(qid, entry["image_name"], f"{IMAGE_FOLDER}/{entry['image_name']}",
                                     entry["question"], entry["answer"], entry["answer_type"], split,
                                     entry.get("question_type", ""), self.name))
        return RecordTable.from_records(records, root)
