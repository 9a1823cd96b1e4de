import math

import pytest

from data import fixtures as fx
from radlab.data.sources.iu_xray import mesh_labels
from radlab.data.sources.openi import OpenISource


def test_openi_xml_sections_mesh_labels_and_images(tmp_path):
    frame = OpenISource().load(fx.build_openi(tmp_path)).frame.set_index("id")
    assert list(frame.index) == ["openi_CXR1_1_IM-0001-3001", "openi_CXR1_1_IM-0001-4001", "openi_CXR2_IM-0652-1001",
                                 "openi_CXR3_IM-1384-1001", "openi_CXR4_IM-2050-1001"]
    first, second = frame.loc["openi_CXR1_1_IM-0001-3001"], frame.loc["openi_CXR2_IM-0652-1001"]
    assert first["patient_id"] == "iu1" and first["image_path"] == "NLMCXR_png/CXR1_1_IM-0001-3001.png"
    assert first["report"] == "FINDINGS: The heart is normal in size. No pneumothorax. IMPRESSION: Normal chest x-XXXX."
    assert "TB test" not in first["report"]  # INDICATION stays out
    assert first["label_no_finding"] == 1 and first["label_cardiomegaly"] == 0
    expected = mesh_labels("Cardiomegaly/borderline;Nodule/lung/upper lobe/right")
    assert second["label_cardiomegaly"] == expected["cardiomegaly"] == -1 and second["label_nodule"] == 1
    labels = frame.filter(like="label_")
    assert labels.loc[["openi_CXR3_IM-1384-1001", "openi_CXR4_IM-2050-1001"]].isna().all().all()  # not indexed


@pytest.mark.parametrize("mesh", ["No Indexing", "Technical Quality of Image Unsatisfactory ", "",
                                  "No Indexing;Technical Quality of Image Unsatisfactory"])
def test_reports_without_finding_terms_are_unlabelled_not_negative(mesh):
    assert all(math.isnan(v) for v in mesh_labels(mesh).values())


def test_image_quality_term_beside_findings_keeps_the_findings():
    labels = mesh_labels("Technical Quality of Image Unsatisfactory ;Cardiomegaly/mild")
    assert labels["cardiomegaly"] == 1 and labels["pneumothorax"] == 0 and labels["no_finding"] == 0
