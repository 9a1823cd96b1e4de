"""Closed VQA questions written from labels and sex: one per 0/1 label and per known sex, rows kept in place."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from radlab.data.label_questions import SEX_QUESTION, label_questions
from radlab.data.records import RecordTable


def _table(tmp_path: Path) -> RecordTable:
    return RecordTable.from_records([
        {"id": "a", "image_path": "images/a.png", "source": "phantom", "patient_id": "P1", "study_id": "P1_S1",
         "split": "train", "sex": "F", "label_cardiomegaly": 1.0, "label_pleural_effusion": 0.0,
         "label_no_finding": 0.0},
        {"id": "b", "image_path": "images/b.png", "source": "phantom", "patient_id": "P2", "study_id": "P2_S1",
         "split": "test", "sex": "", "label_cardiomegaly": -1.0, "label_pleural_effusion": np.nan,
         "label_no_finding": 1.0},
        {"id": "c", "image_path": "", "source": "phantom", "patient_id": "P3", "split": "train", "sex": "M",
         "label_cardiomegaly": 1.0, "report": "text-only record"},
    ], root=tmp_path)


def test_one_question_per_certain_label_and_known_sex(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        questions = label_questions(_table(tmp_path)).frame.set_index("id")
    assert sorted(questions.index) == ["a:cardiomegaly", "a:no_finding", "a:pleural_effusion", "a:sex",
                                       "b:no_finding"]
    assert questions.loc["a:cardiomegaly", "question"] == "Is there cardiomegaly?"
    assert questions.loc["a:pleural_effusion", "question"] == "Is there pleural effusion?"
    assert questions.loc["b:no_finding", "question"] == "Is this radiograph normal?"
    assert list(questions.loc[["a:cardiomegaly", "a:pleural_effusion", "a:no_finding", "b:no_finding"],
                              "answer"]) == ["yes", "no", "no", "yes"]
    assert (questions.loc["a:sex", "question"], questions.loc["a:sex", "answer"]) == (SEX_QUESTION, "female")
    assert questions.loc["a:sex", "answer_type"] == "open" and questions.loc["a:sex", "question_type"] == "sex"
    assert questions.loc["a:cardiomegaly", "answer_type"] == "closed"
    assert list(questions.loc[["a:sex", "b:no_finding"], "split"]) == ["train", "test"]
    assert list(questions.loc[["a:sex", "b:no_finding"], "patient_id"]) == ["P1", "P2"]
    assert questions.loc["b:no_finding", "image_path"] == "images/b.png"
    assert "1 uncertain labels asked nothing" in caplog.text


def test_findings_can_be_chosen_and_unknown_ones_are_named(tmp_path: Path) -> None:
    questions = label_questions(_table(tmp_path), findings=["pleural_effusion"], sex=False)
    assert list(questions.frame["id"]) == ["a:pleural_effusion"]
    with pytest.raises(ValueError, match=r"no label column for \['pneumothorax'\]"):
        label_questions(_table(tmp_path), findings=["pneumothorax"])
    with pytest.raises(ValueError, match="no question could be written"):
        label_questions(_table(tmp_path).subset([1]), findings=["cardiomegaly"], sex=False)


def test_questions_point_at_the_tables_images_whatever_its_root(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A table read from a relative folder (as benchmarks give it) keeps resolving its images."""
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "images" / "a.png").write_bytes(b"png")
    monkeypatch.chdir(tmp_path)
    table = RecordTable.from_records([{"id": "a", "image_path": "images/a.png", "source": "phantom",
                                       "patient_id": "P1", "sex": "M", "label_cardiomegaly": 0.0}],
                                     root=Path("data"))
    questions = label_questions(table)
    assert len(questions) == 2 and all(questions.image_path(i).is_file() for i in range(2))
