import logging

import numpy as np
import pydicom
import pytest

from data import fixtures as fx
from radlab.data.dicom import DicomHeader, read_dicom, read_header, window
from radlab.data.images import read_image

PIXELS = fx.image(7, shape=(24, 20), dtype=np.uint16)


def test_monochrome1_is_inverted(tmp_path):
    plain = read_dicom(fx.dicom(tmp_path / "m2.dcm", PIXELS))
    inverted = read_dicom(fx.dicom(tmp_path / "m1.dcm", PIXELS, photometric="MONOCHROME1"))
    np.testing.assert_allclose(inverted, 1.0 - plain, atol=1e-6)
    np.testing.assert_allclose(plain, (PIXELS - PIXELS.min()) / np.ptp(PIXELS), atol=1e-6)


def test_rescale_then_window(tmp_path):
    center, width = 3000.0, 4000.0
    out = read_dicom(fx.dicom(tmp_path / "w.dcm", PIXELS, slope=2.0, intercept=-100.0, window=(center, width)))
    values = 2.0 * PIXELS - 100.0
    expected = np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert (out == 0).any() and (out == 1).any()  # the window clips both ends


def test_voi_lut_sequence_wins_over_window(tmp_path):
    lut = (np.linspace(0, 1, 4096) ** 2 * 4000).astype(int)
    out = read_dicom(fx.dicom(tmp_path / "lut.dcm", PIXELS, voi_lut=lut, window=(10.0, 2.0)))
    np.testing.assert_allclose(out, (lut[PIXELS] - lut.min()) / (lut.max() - lut.min()), atol=1e-5)


def test_compressed_transfer_syntaxes(tmp_path):
    plain = read_dicom(fx.dicom(tmp_path / "raw.dcm", PIXELS))
    np.testing.assert_array_equal(read_dicom(fx.dicom(tmp_path / "rle.dcm", PIXELS, syntax="rle")), plain)
    eight = fx.image(8)
    jpeg = read_dicom(fx.dicom(tmp_path / "jpeg.dcm", eight, syntax="jpeg"))  # JPEG baseline via pylibjpeg
    assert jpeg.shape == eight.shape and np.corrcoef(jpeg.ravel(), eight.ravel())[0, 1] > 0.9


def test_read_image_dispatches_dicom_by_suffix_or_marker(tmp_path):
    path = fx.dicom(tmp_path / "no_suffix", PIXELS)
    np.testing.assert_array_equal(read_image(path), read_dicom(path))
    fx.png(tmp_path / "a.png", fx.image(1))
    assert read_image(tmp_path / "a.png").dtype == np.float32


def test_header_keeps_identifiers_out_of_repr_and_logs(tmp_path, caplog):
    path = fx.dicom(tmp_path / "h.dcm", PIXELS, age="51", view="AP", sex="M", patient_id="SECRET-ID")
    with caplog.at_level(logging.DEBUG):
        header = read_header(path)
        read_dicom(path)
    assert header == DicomHeader("AP", "M", "51", 24, 20, "MONOCHROME2", "CR", patient_key="SECRET-ID")
    assert "SECRET" not in repr(header) and "Test^Patient" not in repr(header)
    assert "51" not in caplog.text and "SECRET" not in caplog.text  # pydicom's invalid-value notices quote values


def test_unreadable_dicom_names_the_file(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x01\x02")
    with pytest.raises(OSError, match="broken.dcm"):
        read_image(bad)


@pytest.mark.parametrize("element", ["Rows", "BitsAllocated", "BitsStored", "PhotometricInterpretation"])
def test_a_header_missing_what_the_pixels_need_is_an_unreadable_image(tmp_path, element):
    """pydicom raises AttributeError for these; the caller's skip policy and `data check` expect OSError."""
    path = fx.dicom(tmp_path / "ok.dcm", PIXELS, bits=12)
    ds = pydicom.dcmread(path)
    delattr(ds, element)
    ds.save_as(tmp_path / "broken.dcm", enforce_file_format=False)
    with pytest.raises(OSError, match="broken.dcm: cannot decode pixel data"):
        read_image(tmp_path / "broken.dcm")


def test_a_damaged_file_is_an_unreadable_image_whatever_pydicom_raises(tmp_path):
    """A header cut off inside an element (pydicom: BytesLengthException) or with an unknown VR
    (NotImplementedError) is an OSError naming the file, as the skip policy and `data check` expect."""
    data = fx.dicom(tmp_path / "ok.dcm", PIXELS, bits=12).read_bytes()
    start = data.index(b"UL", 128)
    cases = {"cut.dcm": data[:start + 5], "vr.dcm": data[:start] + b"KL" + data[start + 2:]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(OSError, match=name):
            read_image(tmp_path / name)


def test_window_functions():
    x = np.array([0.0, 50.0, 100.0])
    np.testing.assert_allclose(window(x, 50, 100, "LINEAR_EXACT"), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(window(x, 50, 100, "SIGMOID")[1], 0.5)


def _edited(src, dst, **values):
    ds = pydicom.dcmread(src)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(dst)
    return dst


@pytest.mark.parametrize("edits", [{"WindowCenter": None, "WindowWidth": None}, {"WindowCenter": None},
                                   {"WindowWidth": 0.0}, {"WindowWidth": -10.0}])
def test_blank_or_non_positive_window_falls_back_to_stored_range(tmp_path, edits):
    path = fx.dicom(tmp_path / "w.dcm", PIXELS, window=(2000.0, 4000.0))
    out = read_dicom(_edited(path, tmp_path / "e.dcm", **edits))
    np.testing.assert_allclose(out, read_dicom(fx.dicom(tmp_path / "plain.dcm", PIXELS)), atol=1e-6)


@pytest.mark.parametrize("edits", [{"RescaleSlope": None, "RescaleIntercept": None}, {"RescaleIntercept": None}])
def test_blank_rescale_is_identity(tmp_path, edits):
    path = fx.dicom(tmp_path / "r.dcm", PIXELS, slope=2.0, intercept=-100.0, window=(2000.0, 4000.0))
    out = read_dicom(_edited(path, tmp_path / "e.dcm", **edits))
    np.testing.assert_allclose(out, read_dicom(fx.dicom(tmp_path / "w.dcm", PIXELS, window=(2000.0, 4000.0))),
                               atol=1e-6)


DISPLAY_LUT = np.arange(4096) // 16  # a 12-bit-in, 8-bit-out display LUT, as modalities write them


def _with_lut(tmp_path, name: str, entries: np.ndarray, bits: int, stored: str):
    """PIXELS under a VOI LUT of ``entries`` at ``bits`` per entry, its data stored as US values, OW 16-bit
    words (pydicom's reading of OW) or OW bytes (8 bits allocated per entry)."""
    ds = pydicom.dcmread(fx.dicom(tmp_path / f"{name}.dcm", PIXELS))
    item = pydicom.Dataset()
    item.LUTDescriptor = [len(entries), 0, bits]
    item.LUTData = ([int(v) for v in entries] if stored == "US"
                    else entries.astype("<u2" if stored == "OW words" else np.uint8).tobytes())
    ds.VOILUTSequence = [item]
    ds["VOILUTSequence"][0]["LUTData"].VR = "US" if stored == "US" else "OW"
    ds.save_as(tmp_path / f"{name}.dcm")
    return tmp_path / f"{name}.dcm"


@pytest.mark.parametrize("stored", ["US", "OW words", "OW bytes"])
def test_an_8_bit_voi_lut_maps_every_stored_value(tmp_path, stored):
    """pydicom's apply_voi indexes an 8-bit LUT in uint8: stored values above 255 wrapped around the table."""
    out = read_dicom(_with_lut(tmp_path, "lut8", DISPLAY_LUT, 8, stored))
    expected = (DISPLAY_LUT[PIXELS] - DISPLAY_LUT.min()) / (DISPLAY_LUT.max() - DISPLAY_LUT.min())
    assert PIXELS.max() > 1000
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_a_lut_maps_values_outside_it_to_its_ends_and_ranges_over_its_entries(tmp_path):
    entries = np.array([10, 50, 100, 200])
    out = read_dicom(_with_lut(tmp_path, "short", entries, 8, "OW words"))
    expected = (entries[np.clip(PIXELS, 0, 3)] - 10) / 190
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_palette_colour_is_read_through_its_palette(tmp_path):
    indices = np.arange(24 * 20).reshape(24, 20) % 4
    ds = pydicom.dcmread(fx.dicom(tmp_path / "p.dcm", indices.astype(np.uint16)))
    ds.PhotometricInterpretation = "PALETTE COLOR"
    palette = np.array([65535, 43690, 21845, 0], dtype="<u2")  # index 0 white ... index 3 black
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [4, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", palette.tobytes())
        ds[f"{colour}PaletteColorLookupTableDescriptor"].VR = "US"
    ds.save_as(tmp_path / "p.dcm")
    np.testing.assert_allclose(read_dicom(tmp_path / "p.dcm"), palette[indices] / 65535, atol=1e-6)


def test_an_unusable_window_value_is_an_unreadable_image_naming_the_file(tmp_path):
    ds = pydicom.dcmread(fx.dicom(tmp_path / "w.dcm", PIXELS, window=(2000.0, 4000.0)))
    del ds.WindowCenter
    ds.add_new(0x00281050, "LO", "abcd")  # a Window Center that is no number, as a damaged header may hold
    path = tmp_path / "bad.dcm"
    ds.save_as(path)
    with pytest.raises(OSError, match=r"bad\.dcm: cannot map its pixel values to intensities \(ValueError"):
        read_dicom(path)
