import numpy as np
import pytest

from radlab.data.bundled import bundled_sources, load_bundled
from radlab.data.images import read_image
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
    ("Hydropneumothorax/left/large", {"pneumothorax": 1, "pleural_effusion": 1}),
    ("Hemopneumothorax/right/moderate", {"pneumothorax": 1, "pleural_effusion": 1}),
    ("Hemothorax/left/small", {"pleural_effusion": 1, "pneumothorax": 0}),
    ("Hernia, Diaphragmatic/small", {"hernia": 1}),
    ("Fibrosis/diffuse", {"fibrosis": 1, "interstitial_lung_disease": 1}),
    ("Cavitation/lung/apex/right", {"lung_cavity": 1, "lung_lesion": 1}),
    ("Cysts/lung/upper lobe/left", {"lung_cyst": 1, "lung_lesion": 1}),
    ("Cysts/humerus/left", {"lung_cyst": 0, "lung_lesion": 0}),
    ("Blister/lung/upper lobe/bilateral", {"emphysema": 1}),
    ("Cardiac Shadow/borderline", {"cardiomegaly": -1}),
    ("Density/breast/bilateral", {"lung_opacity": 0}),
    ("Mass/breast/large", {"mass": 0, "lung_lesion": 0}),
    ("Density/mitral valve", {"lung_opacity": 0}),
    ("Opacity/lung/base/left", {"lung_opacity": 1, "nodule": 0}),
    ("Density/lung/base/left/round", {"nodule": 1, "lung_lesion": 1, "lung_opacity": 1}),
    ("Opacity/breast/round", {"nodule": 0, "lung_opacity": 0}),
    ("Catheters, Indwelling/left;Implanted Medical Device", {"support_devices": 1, "no_finding": 1}),
    ("Catheters, Indwelling/left;Cicatrix/lung/apex", {"support_devices": 1, "no_finding": 0}),
    ("Spine/degenerative", {"no_finding": 0, "scoliosis": 0}),
    # vascular calcinosis is not the taxonomy's calcification, as Atherosclerosis/aorta is not; a node beside a vessel is
    ("Calcinosis/aorta", {"calcification": 0, "no_finding": 0}),
    ("Calcinosis/aorta, thoracic/severe", {"calcification": 0}),
    ("Calcinosis/mitral valve", {"calcification": 0}),
    ("Calcinosis/aorta/lymph nodes", {"calcification": 1}),
    ("Calcinosis/lung/hilum/lymph nodes/right", {"calcification": 1}),
    ("Atherosclerosis/aorta", {"calcification": 0, "no_finding": 0}),
])
def test_mesh_terms_map_as_their_tags_say(mesh: str, expected: dict[str, float]) -> None:
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


def test_every_bundled_folder_with_images_reads_them(data_root):
    """Whatever image set lands in the bundled data is recognised by its layout and its images read as 2-D
    arrays in [0, 1] (a spread of up to 16 per folder; `radlab data check` reads them all)."""
    tables = load_bundled(data_root)
    assert set(tables) == set(bundled_sources(data_root)) and tables
    present = {name: [i for i in np.flatnonzero(t.has_images()) if t.image_path(int(i)).is_file()]
               for name, t in tables.items()}
    present = {name: rows for name, rows in present.items() if rows}
    if not present:
        pytest.skip(f"no bundled folder holds image files yet ({sorted(tables)}): images are tested on fixtures")
    for name, rows in present.items():
        for i in np.asarray(rows)[np.linspace(0, len(rows) - 1, min(16, len(rows))).astype(int)]:
            image = read_image(tables[name].image_path(int(i)))
            assert image.ndim == 2 and min(image.shape) >= 64, (name, tables[name].image_path(int(i)))
            assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.01, (name, tables[name].image_path(int(i)))
