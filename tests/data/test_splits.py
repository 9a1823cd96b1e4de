import numpy as np
import pytest

from data import fixtures as fx
from radlab.data.records import RecordTable
from radlab.data.sources.covid_ieee import CovidIEEESource
from radlab.data.sources.mimic_cxr import MIMICCXRSource
from radlab.data.sources.nih import NIHSource
from radlab.data.splits import assign_splits, check_patient_disjoint, patient_subset


def test_official_splits_survive_merging_and_the_rest_split_by_patient(tmp_path):
    nih = NIHSource().load(fx.build_nih(tmp_path / "nih"))
    mimic = MIMICCXRSource().load(fx.build_mimic(tmp_path / "mimic"))
    covid = CovidIEEESource().load(fx.build_covid(tmp_path / "covid"))  # ships no split
    merged = assign_splits(RecordTable.concat([nih, mimic, covid]), seed=0)
    frame = merged.frame.set_index("id")
    assert frame.loc["nih_00000003_000", "split"] == "test" and frame.loc["nih_00000001_000", "split"] == "train"
    assert frame.loc["mimic_096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "split"] == "val"
    covid_splits = frame[frame["source"] == "covid_ieee"].groupby("patient_id")["split"].nunique()
    assert (covid_splits == 1).all() and (frame["split"] != "").all()
    check_patient_disjoint(merged)


def test_patient_splits_do_not_depend_on_row_order(tmp_path):
    records = [{"id": f"r{i}", "image_path": f"{i}.png", "source": "s", "patient_id": f"p{i % 37}"}
               for i in range(300)]
    table = RecordTable.from_records(records, tmp_path)
    order = np.random.default_rng(0).permutation(len(records))
    a = assign_splits(table, seed=5).frame.set_index("id")["split"]
    b = assign_splits(table.subset(order), seed=5).frame.set_index("id")["split"]
    assert a.sort_index().equals(b.sort_index())


def _two_records(first: str, second: str) -> list[dict]:
    return [{"id": "a", "image_path": "a.png", "source": "s", "patient_id": "SECRET-1", "split": first},
            {"id": "b", "image_path": "b.png", "source": "s", "patient_id": "SECRET-1", "split": second}]


def test_a_patient_in_two_splits_is_caught_without_naming_the_patient(tmp_path):
    with pytest.raises(ValueError, match=r"1 patients appear in several splits \(source s\)") as caught:
        check_patient_disjoint(RecordTable.from_records(_two_records("train", "test"), tmp_path))
    assert "SECRET" not in str(caught.value)


def test_records_a_provider_split_misses_follow_the_patient(tmp_path):
    records = [{"id": f"p{p}_{k}", "image_path": f"{p}_{k}.png", "source": "s", "patient_id": f"p{p}",
                "split": "test" if k == "a" else ""} for p in range(20) for k in "ab"]
    records += [{"id": "new", "image_path": "new.png", "source": "s", "patient_id": "new"}]
    out = assign_splits(RecordTable.from_records(records, tmp_path), seed=0).frame.set_index("id")["split"]
    assert (out.drop("new") == "test").all() and out["new"] != ""
    redrawn = assign_splits(RecordTable.from_records(records, tmp_path), seed=0, keep_existing=False)
    check_patient_disjoint(redrawn)


def test_a_patient_in_two_provider_splits_is_refused(tmp_path):
    table = RecordTable.from_records(_two_records("train", "test"), tmp_path)
    with pytest.raises(ValueError, match=r"1 patients have records in different provider splits \(source s") as caught:
        assign_splits(table, seed=0)
    assert "SECRET" not in str(caught.value)
    assert "keep_existing" not in str(caught.value), "a Python argument no command or config reaches"
    assert "leave the split empty for those patients' records" in str(caught.value)
    check_patient_disjoint(assign_splits(table, seed=0, keep_existing=False))


def test_question_level_official_splits_are_kept_and_counted(tmp_path, caplog):
    shared_image = [{"id": f"q{k}", "image_path": "img1.jpg", "source": "vqa_rad", "patient_id": "img1.jpg",
                     "split": split} for k, split in enumerate(("train", "train", "test"))]
    other = _two_records("train", "")
    table = RecordTable.from_records(shared_image + other, tmp_path)
    with caplog.at_level("WARNING", logger="radlab.data.splits"):
        out = assign_splits(table, seed=0).frame.set_index("id")["split"]
    assert list(out[["q0", "q1", "q2"]]) == ["train", "train", "test"] and out["b"] == "train"
    assert "1 images of question-level official splits (vqa_rad)" in caplog.text
    with pytest.raises(ValueError, match="1 patients appear in several splits"):
        check_patient_disjoint(RecordTable.from_records(shared_image, tmp_path))


def test_patient_subsets_are_nested_patient_level_and_seeded(tmp_path):
    records = [{"id": f"r{i}", "image_path": f"{i}.png", "source": "s", "patient_id": f"p{i % 50}"}
               for i in range(200)]
    table = RecordTable.from_records(records, tmp_path)
    patients = {f: set(patient_subset(table, f, seed=3).frame["patient_id"]) for f in (0.02, 0.1, 0.5, 1.0)}
    assert [len(p) for p in patients.values()] == [1, 5, 25, 50]
    assert patients[0.02] <= patients[0.1] <= patients[0.5] <= patients[1.0]
    half = patient_subset(table, 0.5, seed=3).frame
    assert len(half) == 4 * 25 and (half.groupby("patient_id").size() == 4).all()  # every image of a patient
    assert set(patient_subset(table, 0.5, seed=4).frame["patient_id"]) != patients[0.5]
    shuffled = RecordTable(table.frame.sample(frac=1.0, random_state=0).reset_index(drop=True), table.root)
    assert set(patient_subset(shuffled, 0.5, seed=3).frame["patient_id"]) == patients[0.5]
    with pytest.raises(ValueError, match="fraction"):
        patient_subset(table, 0.0, seed=0)


def test_splits_do_not_depend_on_the_order_fractions_are_written_in(tmp_path):
    records = [{"id": f"r{i}", "image_path": f"{i}.png", "source": "s", "patient_id": f"p{i}"} for i in range(200)]
    table = RecordTable.from_records(records, tmp_path)
    a = assign_splits(table, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=0).frame["split"]
    b = assign_splits(table, {"test": 0.2, "val": 0.1, "train": 0.7}, seed=0).frame["split"]
    assert a.equals(b) and set(a) == {"train", "val", "test"}


@pytest.mark.parametrize("fractions,message", [({"train": 0.9, "dev": 0.1}, r"name \['dev'\]"),
                                               ({"train": 1.2, "val": -0.2}, r"in \[0, 1\]")])
def test_split_fractions_are_checked_where_they_are_given(fractions, message):
    from radlab.train.config import DataConfig

    with pytest.raises(ValueError, match=message):
        DataConfig(sources=[{"source": "phantom", "path": "x"}], split_fractions=fractions)


def test_a_release_without_a_validation_split_gets_one_from_its_training_patients(tmp_path):
    """NIH and VinDr (PhysioNet) ship train and test only: model selection would otherwise need the test split."""
    records = [{"id": f"r{i}", "image_path": f"{i}.png", "source": "nih", "patient_id": f"p{i // 2}",
                "split": "test" if i // 2 >= 320 else "train"} for i in range(800)]
    table = RecordTable.from_records(records, tmp_path)
    split = assign_splits(table, seed=0)
    frame = split.frame
    val = set(frame.loc[frame["split"] == "val", "patient_id"])
    assert 20 <= len(val) <= 60 and all(int(p[1:]) < 320 for p in val)  # 1/8 of the 320 training patients
    assert (frame["split"] == "test").sum() == 160  # the provider's test split as it was
    check_patient_disjoint(split)
    assert assign_splits(table, seed=0).frame["split"].equals(frame["split"])
    assert set(assign_splits(table, seed=1).frame.query("split == 'val'")["patient_id"]) != val
