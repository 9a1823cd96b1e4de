"""SLAKE in its release layout: ``train.json``, ``validate.json``, ``test.json`` and ``imgs/<img_name>``.

One record per English question (``q_lang`` "en"; the Chinese duplicates are skipped), with ``question``,
``answer``, ``answer_type`` (closed or open) and ``question_type`` (SLAKE's ``content_type``). The file
gives the split; an image stands for its patient (bootstrap unit).
"""

from __future__ import annotations

import json
from pathlib import Path

from radlab.data.records import RecordTable
from radlab.data.sources.base import SOURCES, Source
from radlab.data.sources.vqa_rad import qa_record

FILES = {"train": "train.json", "val": "validate.json", "test": "test.json"}
IMAGE_FOLDER = "imgs"
REQUIRED = ("img_name", "question", "answer", "answer_type")


@SOURCES.register("slake", "SLAKE release (train/validate/test.json + imgs/): one record per English question")
class SlakeSource(Source):
    name = "slake"
    markers = (FILES["val"],)

    def load(self, root: Path) -> RecordTable:
        root = Path(root)
        self.require(root / FILES["train"])
        records = []
        for split, filename in FILES.items():
            path = root / filename
            if not path.exists():
                continue
            for n, entry in enumerate(json.loads(path.read_text(encoding="utf-8"))):
                missing = [k for k in REQUIRED if k not in entry]
                if missing:
                    raise ValueError(f"{path}: entry {n}: missing key(s) {missing}")
                if entry.get("q_lang", "en") != "en":
                    continue
                qid = f"slake_{split}_{entry.get('qid', n)}_{n}"
                records.append(qa_record(qid, entry["img_name"], f"{IMAGE_FOLDER}/{entry['img_name']}",
                                         entry["question"], entry["answer"], entry["answer_type"], split,
                                         entry.get("content_type", ""), self.name))
        return RecordTable.from_records(records, root)
