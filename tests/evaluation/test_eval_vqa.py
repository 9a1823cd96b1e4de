"""VQA-RAD and SLAKE adapters on tiny fixtures in their release layouts; closed-set VQA on phantom images."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from radlab.data.label_questions import label_questions
from radlab.data.records import RecordTable
from radlab.data.sources import SOURCES
from radlab.evaluation.runner import evaluate
from radlab.models.encoder import RadEncoder


def _vqa_rad_entry(qid: int, image: str, question: str, answer: str, answer_type: str, test: bool) -> dict:
    return {"qid": qid, "phrase_type": "test_freeform" if test else "freeform", "qid_linked_id": f"L{qid}",
            "image_case_url": "https://medpix.example/case", "image_name": image, "image_organ": "CHEST",
            "evaluation": "given", "question": question, "question_rephrase": "NULL", "question_relation": "NULL",
            "question_frame": "NULL", "question_type": "PRES", "answer": answer, "answer_type": answer_type}


@pytest.fixture(scope="module")
def vqa_rad_dir(split_table: RecordTable, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VQA-RAD-layout folder whose images are phantoms and whose questions the records answer."""
    root = tmp_path_factory.mktemp("vqa_rad")
    images = root / "VQA_RAD Image Folder"
    images.mkdir()
    questions = label_questions(split_table, findings=["cardiomegaly", "pleural_effusion"])
    names: dict[str, str] = {}
    entries = []
    for qid, row in enumerate(questions.frame.itertuples()):
        if row.image_path not in names:
            names[row.image_path] = f"synpic{len(names):05d}.png"
            os.symlink(questions.image_path(qid), images / names[row.image_path])
        entries.append(_vqa_rad_entry(qid, names[row.image_path], row.question, row.answer.capitalize(),
                                      row.answer_type.upper(), row.split == "test"))
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(entries))
    return root


def test_vqa_rad_adapter_reads_release_layout(vqa_rad_dir: Path) -> None:
    table = SOURCES.build("vqa_rad").load(vqa_rad_dir)
    assert {"question", "answer", "answer_type"} <= set(table.frame.columns)
    assert set(table.frame["answer"]) == {"yes", "no", "male", "female"}
    assert set(table.frame["answer_type"]) == {"closed", "open"}
    assert set(table.frame["split"]) == {"train", "test"}
    assert table.image_path(0).exists()


def test_slake_adapter_keeps_english_questions_by_split(tmp_path: Path) -> None:
    def entry(qid: int, lang: str, answer: str) -> dict:
        return {"img_id": 1, "img_name": "xmlab1/source.jpg", "question": "Is the lung healthy?", "answer": answer,
                "q_lang": lang, "location": "Lung", "modality": "X-Ray", "answer_type": "CLOSED",
                "base_type": "vqa", "content_type": "Abnormality", "triple": ["vhead", "_", "_"], "qid": qid}

    (tmp_path / "train.json").write_text(json.dumps([entry(1, "en", "Yes"), entry(2, "zh", "是")]))
    (tmp_path / "validate.json").write_text(json.dumps([entry(3, "en", "No")]))
    (tmp_path / "test.json").write_text(json.dumps([entry(4, "en", "No")]))
    table = SOURCES.build("slake").load(tmp_path)
    assert list(table.frame["split"]) == ["train", "val", "test"]
    assert list(table.frame["answer"]) == ["yes", "no", "no"]
    assert table.frame["question_type"].iat[0] == "Abnormality"
    assert str(table.image_path(0)).endswith("imgs/xmlab1/source.jpg")


def test_vqa_beats_majority_on_held_out_images(vqa_rad_dir: Path, tiny_encoder: RadEncoder, cache_dir: Path) -> None:
    table = SOURCES.build("vqa_rad").load(vqa_rad_dir)
    out = evaluate(tiny_encoder, table, ["vqa"], [], n_boot=50, options={"vqa": {"steps": 300}},
                   cache_dir=cache_dir)["tasks"]["vqa"]
    assert "skipped" not in out, out
    assert out["n_answers"] == 4 and out["question_encoding"] == "text_tower"
    assert out["accuracy"] > out["majority_accuracy"]
    assert out["by_answer_type"]["open"]["accuracy"] > 0.6  # sex: chance 0.5
    assert np.isclose(out["accuracy_ci"]["estimate"], out["accuracy"])


def test_vqa_on_questions_written_from_labels(split_table: RecordTable, tiny_encoder: RadEncoder,
                                              cache_dir: Path) -> None:
    """Questions from the phantoms' own labels and sex: held-out patients, the image helps beyond the question."""
    questions = label_questions(split_table, findings=["cardiomegaly", "pleural_effusion"])
    out = evaluate(tiny_encoder, questions, ["vqa"], [], n_boot=50, options={"vqa": {"steps": 300}},
                   cache_dir=cache_dir)["tasks"]["vqa"]
    assert "skipped" not in out, out
    assert out["n_answers"] == 4 and set(out["by_answer_type"]) == {"closed", "open"}
    assert out["accuracy"] > max(out["majority_accuracy"], out["question_only_accuracy"])
    test_patients = set(split_table.split("test").frame["patient_id"])
    assert set(questions.split("test").frame["patient_id"]) <= test_patients
