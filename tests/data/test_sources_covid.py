import numpy as np

from data import fixtures as fx
from radlab.data.sources.covid_ieee import CovidIEEESource


def test_covid_xray_only_diagnosis_paths_and_todo(tmp_path):
    frame = CovidIEEESource().load(fx.build_covid(tmp_path)).frame.set_index("id")
    assert len(frame) == 4 and not frame["image_path"].str.startswith("volumes").any()  # CT left out
    covid = frame.loc["covid_nejmc2001573_f1a"]
    assert covid["label_pneumonia"] == 1 and covid["label_no_finding"] == 0 and covid["label_tuberculosis"] == 0
    assert (covid["view"], covid["study_id"], covid["diagnosis"]) == ("AP", "covid_2_3", "Pneumonia/Viral/COVID-19")
    normal = frame.loc["covid_normal-7"]
    assert normal["label_no_finding"] == 1 and normal["label_pneumonia"] == 0 and normal["view"] == "LAT"
    assert np.isnan(frame.loc["covid_todo-8", ["label_pneumonia", "label_no_finding"]].astype(float)).all()


def test_unknown_diagnosis_and_supine_code(tmp_path):
    import pandas as pd

    root = fx.build_covid(tmp_path)
    meta = pd.read_csv(root / "metadata.csv")
    meta.loc[meta["finding"] == "todo", ["finding", "view"]] = ["Unknown", "APS"]
    meta.to_csv(root / "metadata.csv", index=False)
    row = CovidIEEESource().load(root).frame.set_index("id").loc["covid_todo-8"]
    assert np.isnan(row[["label_pneumonia", "label_tuberculosis", "label_no_finding"]].astype(float)).all()
    assert row["view"] == "AP"
