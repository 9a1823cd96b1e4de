"""Every adapter, on a tiny copy of its provider's layout, yields a valid record table under the contract."""

from __future__ import annotations

import numpy as np
import pytest

from data import fixtures as fx
from radlab.data.records import LABEL_PREFIX
from radlab.data.sources import SOURCES
from radlab.data.taxonomy import FINDING_NAMES

CASES = {
    "nih": fx.build_nih, "chexpert": fx.build_chexpert, "mimic_cxr": fx.build_mimic, "padchest": fx.build_padchest,
    "vindr": fx.build_vindr, "rsna_pneumonia": fx.build_rsna, "siim": fx.build_siim, "openi": fx.build_openi,
    "covid_ieee": fx.build_covid, "montgomery": fx.build_montgomery, "shenzhen": fx.build_shenzhen,
    "manifest": fx.build_manifest,
}
LAYOUTS = {"vindr_kaggle": ("vindr", fx.build_vindr_kaggle), "chexpert_test": ("chexpert", fx.build_chexpert_test),
           "siim_stage2": ("siim", fx.build_siim_stage2), "nih_sample": ("nih", fx.build_nih_sample)}
PREFIXES = {"openi": "iu", "covid_ieee": "covid_", "rsna_pneumonia": "rsna_", "manifest": "p"}


@pytest.mark.parametrize("case", sorted(CASES) + sorted(LAYOUTS))
def test_adapter_meets_the_record_contract(case, tmp_path):
    name, build = LAYOUTS.get(case, (case, CASES.get(case)))
    table = SOURCES.build(name).load(build(tmp_path / case))
    frame = table.frame
    assert len(frame) >= 2 and (frame["source"] == SOURCES.get(name).name).all()
    assert frame["patient_id"].str.startswith(PREFIXES.get(name, f"{name.split('_')[0]}_")).all()
    for i in np.flatnonzero(table.has_images()):
        assert table.image_path(int(i)).exists(), table.image_path(int(i))
    label_columns = [c for c in frame.columns if c.startswith(LABEL_PREFIX)]
    assert sorted(c[len(LABEL_PREFIX):] for c in label_columns) == sorted(FINDING_NAMES)
    values = table.labels(FINDING_NAMES)
    assert np.isin(values[~np.isnan(values)], [1.0, 0.0, -1.0]).all()
    mapped = set(SOURCES.get(name).label_map.values())
    never = [n for n in FINDING_NAMES if n not in mapped and np.isnan(values[:, FINDING_NAMES.index(n)]).all()]
    assert never or mapped == set(FINDING_NAMES), "every finding annotated only where the map covers them all"
    assert not (values[:, [FINDING_NAMES.index(n) for n in never]] == 0).any(), "unannotated must stay NaN"


@pytest.mark.parametrize("name", sorted(CASES))
def test_label_map_targets_are_canonical(name):
    assert set(SOURCES.get(name).label_map.values()) <= set(FINDING_NAMES)
