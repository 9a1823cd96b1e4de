import numpy as np
import pytest

from radlab.data.bundled import load_bundled
from radlab.data.sources.iu_xray import mesh_labels


def test_mesh_tags_map_to_canonical_labels():
    labels = mesh_labels("Cardiomegaly/borderline;Nodule/lung/upper lobe/right;Thickening/pleura")
    assert labels["cardiomegaly"] == -1
    assert labels["nodule"] == 1 and labels["lung_lesion"] == 1 and labels["lung_opacity"] == 1
    assert labels["pleural_thickening"] == 1 and labels["pneumothorax"] == 0 and labels["no_finding"] == 0
    assert mesh_labels("normal")["no_finding"] == 1


@pytest.mark.parametrize(("mesh", "expected"), [
    ("Cardiac Shadow/enlarged/mild", {"cardiomegaly": 1, "enlarged_cardiomediastinum": 1}),
    ("Costophrenic Angle/right/blunted", {"pleural_effusion": -1, "pleural_thickening": 0}),
    ("Costophrenic Angle/right/blunted;Pleural Effusion/right", {"pleural_effusion": 1}),
    ("Mediastinum/prominent", {"enlarged_cardiomediastinum": -1, "cardiomegaly": 0}),
    ("Hydropneumothorax/right", {"pneumothorax": 1}),
    ("Bullous Emphysema/lung/apex", {"emphysema": 1}),
    ("Aortic Aneurysm", {"aortic_enlargement": 1}),
])
def test_mesh_synonyms_are_not_read_as_negatives(mesh: str, expected: dict[str, float]) -> None:
    labels = mesh_labels(mesh)
    assert {name: labels[name] for name in expected} == expected


def test_bundled_iu_xray_reports_load_as_records(data_root):
    tables = load_bundled(data_root)
    if "iu_xray_reports" not in tables:
        pytest.skip("iu_xray_reports is not in the bundled data folder")
    table = tables["iu_xray_reports"]
    frame = table.frame
    assert frame["patient_id"].nunique() == 3851
    assert set(frame["view"]) <= {"FRONTAL", "LAT", ""}
    assert (frame.loc[frame["image_path"] != "", "image_path"].str.endswith(".png")).all()
    normal = table.labels(["no_finding"])[:, 0] == 1
    assert 0.3 < normal.mean() < 0.45
    unlabelled = np.isnan(table.labels(["fracture", "pleural_other"])).all(axis=1)
    assert frame.loc[unlabelled, "patient_id"].nunique() == 98  # MeSH "No Indexing" (92) or image quality only (6)
    assert not np.isnan(table.labels(["fracture", "pleural_other"])[~unlabelled]).any()
    assert frame["report"].str.contains("FINDINGS:|IMPRESSION:").mean() > 0.95
