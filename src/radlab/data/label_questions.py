"""Closed-set VQA records written from a record table's labels and sex, for data without a VQA release.

Every image gets, for each finding it is annotated for, "Is there <finding>?" ("Is this radiograph normal?" for
no_finding) answered yes (label 1) or no (label 0) (answer type closed, question type the finding), and "Is
this patient male or female?" (open, question type sex) when its sex is known. Uncertain (-1) and missing
labels ask nothing; how many were passed over is logged. Rows keep their image, patient, study and split, so
the ``vqa`` task's held-out images and patient bootstrap are the table's own. The questions carry exactly the
label information the linear probe reads; what the ``vqa`` task adds is one answer head over image and
question features, as the contrastive-methods benchmark judges encoders on VQA-RAD and SLAKE.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from radlab.data.records import RecordTable, label_column
from radlab.data.taxonomy import NEGATIVE, POSITIVE

log = logging.getLogger(__name__)
SEX_QUESTION = "Is this patient male or female?"
SEX_ANSWERS = {"F": "female", "M": "male"}
WORDED = {"no_finding": "Is this radiograph normal?"}  # where "Is there <finding>?" would not read


def presence_question(finding: str) -> str:
    return WORDED.get(finding, f"Is there {finding.replace('_', ' ')}?")


def label_questions(table: RecordTable, findings: Sequence[str] | None = None, sex: bool = True) -> RecordTable:
    """One question record per annotated (image, finding) and per image of known sex (see module docstring).

    ``findings`` defaults to every label column of the table; a name without a column is an error."""
    names = list(findings) if findings is not None else table.label_names
    missing = [n for n in names if label_column(n) not in table.frame]
    if missing:
        raise ValueError(f"no label column for {missing} (labels present: {table.label_names})")
    frame = table.frame
    images = frame[frame["image_path"] != ""]
    labels = images[[label_column(n) for n in names]].to_numpy(dtype=np.float32, na_value=np.nan)
    records: list[dict[str, Any]] = []
    passed_over = 0
    for i, row in enumerate(images.to_dict("records")):
        base = {k: row[k] for k in ("image_path", "source", "patient_id", "study_id", "split")}
        for k, name in enumerate(names):
            value = labels[i, k]
            if value not in (POSITIVE, NEGATIVE):
                passed_over += int(value == value)  # uncertain; NaN is not annotated
                continue
            records.append({**base, "id": f"{row['id']}:{name}", "question": presence_question(name),
                            "answer": "yes" if value == POSITIVE else "no", "answer_type": "closed",
                            "question_type": name})
        if sex and row.get("sex") in SEX_ANSWERS:
            records.append({**base, "id": f"{row['id']}:sex", "question": SEX_QUESTION,
                            "answer": SEX_ANSWERS[row["sex"]], "answer_type": "open", "question_type": "sex"})
    if passed_over:
        log.info("label questions: %d uncertain labels asked nothing", passed_over)
    if not records:
        raise ValueError(f"no question could be written: none of {len(images)} images has a 0/1 label for "
                         f"{names} or a known sex")
    return RecordTable.from_records(records, root=table.root)  # image paths as given, against the same root
