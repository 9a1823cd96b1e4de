"""Tiny copies of each provider's native layout (file names, column names, DICOM tags), built per test.

Images are small (a few dozen pixels) and random; what matters is that the adapters meet the layouts the
providers ship. Imported by the ``test_sources_*`` modules as ``data.fixtures``.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless, SecondaryCaptureImageStorage, generate_uid
from scipy import ndimage

RNG_SEED = 0


def image(seed: int, shape: tuple[int, int] = (24, 20), dtype: type = np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    high = 255 if dtype == np.uint8 else 4095
    return rng.integers(0, high, size=shape).astype(dtype)


def png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def jpeg(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)
    return path


def dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits: int = 12,
          slope: float | None = None, intercept: float | None = None, window: tuple[float, float] | None = None,
          voi_lut: np.ndarray | None = None, syntax: str = "explicit", view: str = "PA", sex: str = "F",
          age: str = "045Y", patient_id: str = "anon-0") -> Path:
    """A DICOM radiograph written the way pydicom 3 writes conformant files (file meta + preamble)."""
    with config.disable_value_validation():  # providers' non-conformant values (RSNA's bare "51" ages) are kept
        return _dicom(path, pixels, photometric, bits, slope, intercept, window, voi_lut, syntax, view, sex, age,
                      patient_id)


def _dicom(path: Path, pixels: np.ndarray, photometric: str, bits: int, slope: float | None,
           intercept: float | None, window: tuple[float, float] | None, voi_lut: np.ndarray | None, syntax: str,
           view: str, sex: str, age: str, patient_id: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "CR", "Test^Patient", patient_id
    ds.PatientSex, ds.PatientAge, ds.ViewPosition, ds.StudyDate = sex, age, view, "20200101"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 8 if syntax == "jpeg" else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (8, 7, 0) if syntax == "jpeg" else (bits, bits - 1, 0)
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept or 0.0, "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut), 0, 16]
        item.LUTData = [int(v) for v in voi_lut]
        ds.VOILUTSequence = [item]
        ds["VOILUTSequence"][0]["LUTData"].VR = "US"
    if syntax == "jpeg":
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        meta.TransferSyntaxUID = JPEGBaseline8Bit
    elif syntax == "rle":
        ds.compress(RLELossless, pixels.astype(np.uint16), generate_instance_uid=False)
    else:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def csv(path: Path, frame: pd.DataFrame, compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = frame.to_csv(index=False).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def build_nih(root: Path) -> Path:
    names = ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000003_000.png"]
    header = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n")
    rows = ["00000001_000.png,Cardiomegaly,0,1,058Y,M,PA,2682,2749,0.143,0.143,",
            "00000001_001.png,Cardiomegaly|Emphysema,1,1,058Y,M,PA,2894,2729,0.143,0.143,",
            "00000002_000.png,No Finding,0,2,081Y,F,AP,2500,2048,0.171,0.171,",
            "00000003_000.png,Nodule|Effusion,0,3,413Y,F,PA,2500,2048,0.168,0.168,"]
    (root / "Data_Entry_2017.csv").parent.mkdir(parents=True, exist_ok=True)
    (root / "Data_Entry_2017.csv").write_text(header + "\n".join(rows) + "\n")
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000002_000.png\n")
    (root / "test_list.txt").write_text("00000003_000.png\n")
    (root / "BBox_List_2017.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                                             "00000003_000.png,Nodule,225.08,547.01,86.77,79.18\n"
                                             "00000003_000.png,Infiltrate,10.0,20.0,30.0,40.0\n")
    for i, name in enumerate(names):
        folder = "images_001/images" if i < 2 else "images_002/images"
        png(root / folder / name, image(i))
    return root


def build_nih_sample(root: Path) -> Path:
    """Kaggle's random sample of NIH ChestX-ray14: sample_labels.csv (flattened size/spacing headers) and PNGs
    in sample/images/; no official split lists."""
    header = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImageWidth,OriginalImageHeight,OriginalImagePixelSpacing_x,OriginalImagePixelSpacing_y\n")
    rows = ["00000013_005.png,Emphysema|Infiltration|Pleural_Thickening|Pneumothorax,5,13,060Y,M,AP,3056,2544,0.139,0.139",
            "00000013_026.png,Cardiomegaly|Emphysema,26,13,057Y,M,AP,2500,2048,0.168,0.168",
            "00000017_001.png,No Finding,1,17,077Y,M,AP,2500,2048,0.168,0.168",
            "00000032_001.png,Cardiomegaly|Edema|Effusion,1,32,055Y,F,AP,2500,2048,0.168,0.168"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "sample_labels.csv").write_text(header + "\n".join(rows) + "\n")
    for i, row in enumerate(rows):
        png(root / "sample" / "images" / row.split(",")[0], image(30 + i))
    return root


CHEXPERT_LABELS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                   "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                   "Pleural Other", "Fracture", "Support Devices"]


def build_chexpert(root: Path) -> Path:
    head = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT_LABELS) + "\n"
    train = ["CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0",
             "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,",
             "CheXpert-v1.0-small/train/patient00002/study2/view2_lateral.jpg,Female,87,Lateral,,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,",
             "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg,Male,0,Frontal,PA,1.0,,,,,,,,,,,,,"]  # age 0: unknown
    valid = ["CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,"
             "0.0,1.0,1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.csv").write_text(head + "\n".join(train) + "\n")
    (root / "valid.csv").write_text(head + "\n".join(valid) + "\n")
    for i, line in enumerate(train + valid):
        jpeg(root / line.split(",")[0].split("/", 1)[1], image(10 + i))
    return root


def build_chexpert_test(root: Path) -> Path:
    """The CheXpert test set as CheXlocalize ships it: ``test_labels.csv`` (Path relative to ROOT, the 14
    observations as 0/1, no demographics or view columns) beside ``test/patientN/studyN/viewK_*.jpg``."""
    rows = ["test/patient64741/study1/view1_frontal.jpg,0,1,1,1,0,0,0,0,0,0,0,0,0,1",
            "test/patient64741/study1/view2_lateral.jpg,0,1,1,1,0,0,0,0,0,0,0,0,0,1",
            "test/patient64750/study1/view1_frontal.jpg,1,0,0,0,0,0,0,0,0,0,0,0,0,0"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "test_labels.csv").write_text("Path," + ",".join(CHEXPERT_LABELS) + "\n" + "\n".join(rows) + "\n")
    for i, line in enumerate(rows):
        jpeg(root / line.split(",")[0], image(30 + i))
    return root


MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough, evaluate for pneumonia

 FINDINGS:

 There is a small left pleural effusion.  No pneumothorax.

 IMPRESSION:

 Small left pleural effusion.
"""


def build_mimic(root: Path, with_patients: bool = True) -> Path:
    images = [("10000032", "50414267", "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA", "train"),
              ("10000032", "50414267", "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL", "train"),
              ("10000764", "57375967", "096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "AP", "validate"),
              ("10000898", "50771383", "6ad03ed1-97ee17ee-9cf8b320-f7011003-cd93b42d", "AP AXIAL", "test")]
    split = pd.DataFrame([{"dicom_id": d, "study_id": int(st), "subject_id": int(su), "split": sp}
                          for su, st, d, _, sp in images])
    meta = pd.DataFrame([{"dicom_id": d, "subject_id": int(su), "study_id": int(st),
                          "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": v,
                          "Rows": 24, "Columns": 20, "StudyDate": 21800506, "StudyTime": 213014.531}
                         for su, st, d, v, _ in images])
    labels = {"subject_id": [10000032, 10000764], "study_id": [50414267, 57375967]}
    labels |= {c: [np.nan, np.nan] for c in CHEXPERT_LABELS}
    labels["Pleural Effusion"], labels["Pneumothorax"], labels["Cardiomegaly"] = [1.0, np.nan], [0.0, np.nan], [np.nan, -1.0]
    csv(root / "mimic-cxr-2.0.0-split.csv.gz", split, compress=True)
    csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", meta, compress=True)
    csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", pd.DataFrame(labels), compress=True)
    csv(root / "mimic-cxr-2.0.0-negbio.csv.gz", pd.DataFrame(labels).assign(Cardiomegaly=[np.nan, 1.0]), compress=True)
    with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w") as zf:
        zf.writestr("files/p10/p10000032/s50414267.txt", MIMIC_REPORT)
        zf.writestr("files/p10/p10000764/s57375967.txt", "FINDINGS: Heart size is mildly enlarged. "
                                                        "IMPRESSION: Possible cardiomegaly.")
    if with_patients:
        csv(root / "patients.csv.gz", pd.DataFrame({"subject_id": [10000032, 10000764, 10000898],
                                                    "gender": ["F", "M", "F"], "anchor_age": [52, 76, 91],
                                                    "anchor_year": [2180, 2178, 2177],
                                                    "anchor_year_group": ["2014 - 2016"] * 3, "dod": [""] * 3}),
            compress=True)
    for i, (su, st, d, _, _) in enumerate(images):
        jpeg(root / "files" / f"p{su[:2]}" / f"p{su}" / f"s{st}" / f"{d}.jpg", image(20 + i))
    return root


def build_padchest(root: Path) -> Path:
    columns = ["ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
               "ViewPosition_DICOM", "Projection", "MethodProjection", "Pediatric", "Report", "MethodLabel", "Labels",
               "Localizations"]
    rows = [["216840111366964012819207061112010307142602253_04-014-084.png", 0, 20140915, "s1", "p1", 1930.0, "F",
             "POSTEROANTERIOR", "PA", "Manual review of DICOM fields", "No", " sin hallazg patolog edad pacient .",
             "Physician", "['normal']", "[]"],
            ["135803415504923515076821959678074435083_fzis7d.png", 1, 20150914, "s2", "p2", 1929.0, "M", "LATERAL", "L",
             "Manual review of DICOM fields", "No", " cambi pulmonar cronic .", "RNN_model",
             "['pulmonary fibrosis', 'chronic changes', 'laminar atelectasis', ' pleural effusion']", "['loc basal']"],
            ["313572750430997347502932654319389875966_abcd12.png", 1, 20150915, "s3", "p2", 1929.0, "O", "AP", "AP_horizontal",
             "Manual review of DICOM fields", "No", "", "RNN_model", np.nan, "[]"]]
    frame = pd.DataFrame(rows, columns=columns)
    frame.insert(0, "Unnamed: 0", range(len(frame)))
    csv(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", frame.rename(columns={"Unnamed: 0": ""}))
    for i, row in enumerate(rows):
        png(root / str(row[1]) / row[0], image(30 + i, dtype=np.uint16))
    return root


VINDR_LABELS = ["Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
                "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
                "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion",
                "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD",
                "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding"]


def build_vindr(root: Path) -> Path:
    def row(image_id: str, reader: str | None, *positives: str) -> dict:
        return {"image_id": image_id, **({"rad_id": reader} if reader else {}),
                **{c: int(c in positives) for c in VINDR_LABELS}}
    train = [row("000434271f63a053c4128a0ba6352c7f", "R2", "Cardiomegaly", "Aortic enlargement"),
             row("000434271f63a053c4128a0ba6352c7f", "R3", "Cardiomegaly"),
             row("000434271f63a053c4128a0ba6352c7f", "R6", "Cardiomegaly", "Rib fracture"),
             row("00053190460d56c53cc3e57321387478", "R11", "No finding"),
             row("00053190460d56c53cc3e57321387478", "R9", "No finding"),
             row("00053190460d56c53cc3e57321387478", "R10", "No finding")]
    test = [{k: v for k, v in row("002a34c58c5b758217ed1f584ccbcfe9", None, "Nodule/Mass", "Other diseases").items()}]
    test[0]["Other disease"] = test[0].pop("Other diseases")
    csv(root / "annotations" / "image_labels_train.csv", pd.DataFrame(train))
    csv(root / "annotations" / "image_labels_test.csv", pd.DataFrame(test))
    csv(root / "annotations" / "annotations_train.csv", pd.DataFrame([
        {"image_id": "000434271f63a053c4128a0ba6352c7f", "rad_id": "R2", "class_name": "Cardiomegaly",
         "x_min": 691.0, "y_min": 1375.0, "x_max": 1653.0, "y_max": 1831.0},
        {"image_id": "00053190460d56c53cc3e57321387478", "rad_id": "R11", "class_name": "No finding",
         "x_min": np.nan, "y_min": np.nan, "x_max": np.nan, "y_max": np.nan}]))
    dicom(root / "train" / "000434271f63a053c4128a0ba6352c7f.dicom", image(40, dtype=np.uint16),
          photometric="MONOCHROME1", sex="M", age="062Y")
    dicom(root / "train" / "00053190460d56c53cc3e57321387478.dicom", image(41, dtype=np.uint16), sex="F", age="")
    dicom(root / "test" / "002a34c58c5b758217ed1f584ccbcfe9.dicom", image(42, dtype=np.uint16), sex="O", age="033Y")
    return root


VINDR_KAGGLE_CLASSES = ["Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
                        "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
                        "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "No finding"]


def build_vindr_kaggle(root: Path) -> Path:
    """VinDr-CXR as the Kaggle VinBigData competition ships it: train.csv, one row per box and radiologist."""
    def box(image_id: str, reader: str, name: str, x0: float = np.nan, y0: float = np.nan, x1: float = np.nan,
            y1: float = np.nan) -> dict:
        return {"image_id": image_id, "class_name": name, "class_id": VINDR_KAGGLE_CLASSES.index(name),
                "rad_id": reader, "x_min": x0, "y_min": y0, "x_max": x1, "y_max": y1}
    sick, normal, split = ("9a5094b2563a1ef3ff50dc5c7ff71345", "50a418190bc3fb1ef1633bf9678929b3",
                           "051132a778e61a86eb147c7c6f564dfe")
    csv(root / "train.csv", pd.DataFrame([
        box(normal, "R11", "No finding"),
        box(sick, "R10", "Cardiomegaly", 691, 1375, 1653, 1831),
        box(split, "R10", "Aortic enlargement", 1264, 743, 1611, 1019),
        box(sick, "R9", "Pleural effusion", 1789, 1729, 1875, 1992),
        box(sick, "R9", "Cardiomegaly", 692, 1375, 1657, 1799),
        box(sick, "R9", "Other lesion", 1789, 1729, 1875, 1992),
        box(normal, "R7", "No finding"),
        box(sick, "R8", "Cardiomegaly", 689, 1313, 1666, 1763),
        box(sick, "R10", "Aortic enlargement", 1264, 743, 1611, 1019),
        box(split, "R8", "Aortic enlargement", 1262, 740, 1610, 1020),
        box(split, "R9", "No finding"),
        box(normal, "R10", "No finding")]))
    csv(root / "sample_submission.csv", pd.DataFrame({"image_id": ["002a34c58c5b758217ed1f584ccbcfe9"],
                                                      "PredictionString": ["14 1 0 0 1 1"]}))
    dicom(root / "train" / f"{sick}.dicom", image(43, dtype=np.uint16), photometric="MONOCHROME1", sex="M",
          age="062Y")
    dicom(root / "train" / f"{normal}.dicom", image(44, dtype=np.uint16), sex="F", age="")
    dicom(root / "train" / f"{split}.dicom", image(45, dtype=np.uint16), sex="O", age="047Y")
    dicom(root / "test" / "002a34c58c5b758217ed1f584ccbcfe9.dicom", image(46, dtype=np.uint16))
    return root


def build_rsna(root: Path) -> Path:
    pids = ["0004cfab-14fd-4e49-80ba-63a80b6bddd6", "00436515-870c-4b36-a041-de91049b9ab4",
            "00313ee0-9eaa-42f4-b0ab-c148ed3241cd"]
    csv(root / "stage_2_train_labels.csv", pd.DataFrame([
        {"patientId": pids[0], "x": np.nan, "y": np.nan, "width": np.nan, "height": np.nan, "Target": 0},
        {"patientId": pids[1], "x": 264.0, "y": 152.0, "width": 213.0, "height": 379.0, "Target": 1},
        {"patientId": pids[1], "x": 562.0, "y": 152.0, "width": 256.0, "height": 453.0, "Target": 1},
        {"patientId": pids[2], "x": np.nan, "y": np.nan, "width": np.nan, "height": np.nan, "Target": 0}]))
    csv(root / "stage_2_detailed_class_info.csv", pd.DataFrame([
        {"patientId": pids[0], "class": "No Lung Opacity / Not Normal"}, {"patientId": pids[1], "class": "Lung Opacity"},
        {"patientId": pids[1], "class": "Lung Opacity"}, {"patientId": pids[2], "class": "Normal"}]))
    for i, pid in enumerate(pids):
        dicom(root / "stage_2_train_images" / f"{pid}.dcm", image(50 + i), syntax="jpeg", view=["PA", "AP", "PA"][i],
              sex=["F", "M", "M"][i], age=["51", "48", "19"][i], patient_id=pid)
    dicom(root / "stage_2_test_images" / "0000a175-0e68-4ca4-b1af-167204a7e0bc.dcm", image(59), syntax="jpeg")
    return root


def add_rsna_normals(root: Path, n: int) -> Path:
    """``n`` more labelled patients (class Normal, one tiny DICOM each) in an RSNA root, for split draws."""
    pids = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(n)]
    with (root / "stage_2_train_labels.csv").open("a") as labels, \
            (root / "stage_2_detailed_class_info.csv").open("a") as info:
        labels.writelines(f"{pid},,,,,0\n" for pid in pids)
        info.writelines(f"{pid},Normal\n" for pid in pids)
    for pid in pids:
        dicom(root / "stage_2_train_images" / f"{pid}.dcm", image(1, (8, 8)), syntax="jpeg", patient_id=pid)
    return root


def relative_rle(mask: np.ndarray) -> str:
    """The competition's encoding: column-major runs as (offset from previous run end, length) pairs."""
    flat = (mask.T.flatten() > 0).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [0]])))
    starts, ends = edges[0::2], edges[1::2]
    values, previous = [], 0
    for start, end in zip(starts, ends, strict=True):
        values += [int(start - previous), int(end - start)]
        previous = end
    return " ".join(map(str, values))


def siim_mask() -> np.ndarray:
    mask = np.zeros((24, 20), dtype=np.uint8)
    mask[2:6, 3:9] = 255
    mask[15:18, 12:14] = 255
    return mask


def build_siim(root: Path) -> Path:
    ids = ["1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819",
           "1.2.276.0.7230010.3.1.4.8323329.13666.1517875247.117800"]
    mask = siim_mask()
    top, bottom = mask.copy(), mask.copy()
    top[10:], bottom[:10] = 0, 0
    (root).mkdir(parents=True, exist_ok=True)
    (root / "train-rle.csv").write_text(f"ImageId, EncodedPixels\n{ids[0]}, -1\n{ids[1]}, {relative_rle(top)}\n"
                                        f"{ids[1]}, {relative_rle(bottom)}\n")
    for i, sop in enumerate(ids):
        study, series = f"1.2.276.0.7230010.3.1.2.{i}", f"1.2.276.0.7230010.3.1.3.{i}"
        dicom(root / "dicom-images-train" / study / series / f"{sop}.dcm", image(60 + i), syntax="jpeg",
              patient_id=f"17d405a3-a0d2-4901-b33a-63906aa48d9{i}", sex="M", age="38")
    dicom(root / "dicom-images-test" / "s9" / "r9" / "1.2.276.0.7230010.3.1.4.9.dcm", image(69), syntax="jpeg")
    return root


def add_siim_negatives(root: Path, n: int) -> Path:
    """``n`` more labelled images ("-1", one patient each) in a stage-1 SIIM root, for split draws."""
    with (root / "train-rle.csv").open("a") as labels:
        for i in range(n):
            sop = f"1.2.276.0.7230010.3.1.4.7.{i}"
            labels.write(f"{sop}, -1\n")
            dicom(root / "dicom-images-train" / f"s7.{i}" / f"r7.{i}" / f"{sop}.dcm", image(1, (8, 8)),
                  syntax="jpeg", patient_id=f"negative-patient-{i}")
    return root


SIIM_STAGE1_TEST = "1.2.276.0.7230010.3.1.4.9"
SIIM_STAGE2_TEST = "ID_0011fe81e"


def build_siim_stage2(root: Path) -> Path:
    """SIIM-ACR as the stage 2 release: stage_2_train.csv (plain header, the same relative code) holds train-rle.csv's
    rows and labels the stage-1 test image too; stage_2_images/ holds the unlabelled stage-2 test set, flat."""
    build_siim(root)
    stage1 = pd.read_csv(root / "train-rle.csv", dtype=str, skipinitialspace=True).rename(columns=str.strip)
    (root / "train-rle.csv").unlink()
    test_row = pd.DataFrame({"ImageId": [SIIM_STAGE1_TEST], "EncodedPixels": [relative_rle(siim_mask())]})
    csv(root / "stage_2_train.csv", pd.concat([stage1, test_row]))
    dicom(root / "stage_2_images" / f"{SIIM_STAGE2_TEST}.dcm", image(70), syntax="jpeg",
          patient_id="0b7c5a8e-5f4e-4c8e-9d1a-2f3b4c5d6e7f", sex="F", age="57")
    return root


OPENI_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{uid}"/>
   <IUXRId id="{uid}"/>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">Positive TB test</AbstractText>
            <AbstractText Label="FINDINGS">{findings}</AbstractText>
            <AbstractText Label="IMPRESSION">{impression}</AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>
      {mesh}
   </MeSH>
   {images}
</eCitation>
"""


def build_openi(root: Path) -> Path:
    reports = [(1, "The heart is normal in size. No pneumothorax.", "Normal chest x-XXXX.", ["normal"],
                ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]),
               (2, "Borderline cardiomegaly. Right upper lobe nodule.", "Nodule.",
                ["Cardiomegaly/borderline", "Nodule/lung/upper lobe/right"], ["CXR2_IM-0652-1001"]),
               (3, "XXXX XXXX", "", ["No Indexing"], ["CXR3_IM-1384-1001"]),
               (4, "Heart size normal.", "No acute disease.", ["Technical Quality of Image Unsatisfactory "],
                ["CXR4_IM-2050-1001"])]
    folder = root / "ecgen-radiology"
    folder.mkdir(parents=True, exist_ok=True)
    for uid, findings, impression, mesh, images in reports:
        (folder / f"{uid}.xml").write_text(OPENI_XML.format(
            uid=uid, findings=findings, impression=impression,
            mesh="\n      ".join(f"<major>{m}</major>" for m in mesh),
            images="\n   ".join(f'<parentImage id="{i}"><figureId>F1</figureId></parentImage>' for i in images)))
        for i, name in enumerate(images):
            png(root / "NLMCXR_png" / f"{name}.png", image(70 + uid * 3 + i))
    return root


def build_covid(root: Path) -> Path:
    rows = [
        {"patientid": "2", "offset": 0, "sex": "M", "age": 65, "finding": "Pneumonia/Viral/COVID-19", "view": "PA",
         "modality": "X-ray", "folder": "images", "filename": "auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg"},
        {"patientid": "2", "offset": 3, "sex": "M", "age": 65, "finding": "Pneumonia/Viral/COVID-19", "view": "AP Supine",
         "modality": "X-ray", "folder": "images", "filename": "nejmc2001573_f1a.jpeg"},
        {"patientid": "7", "offset": np.nan, "sex": "F", "age": np.nan, "finding": "No Finding", "view": "L",
         "modality": "X-ray", "folder": "images", "filename": "normal-7.png"},
        {"patientid": "8", "offset": 5, "sex": "F", "age": 30, "finding": "todo", "view": "PA",
         "modality": "X-ray", "folder": "images", "filename": "todo-8.jpg"},
        {"patientid": "9", "offset": 1, "sex": "M", "age": 50, "finding": "Pneumonia/Viral/COVID-19", "view": "Axial",
         "modality": "CT", "folder": "volumes", "filename": "coronacases_org_001.nii.gz"}]
    frame = pd.DataFrame(rows)
    for extra in ("RT_PCR_positive", "survival", "date", "location", "doi", "url", "license", "clinical_notes"):
        frame[extra] = ""
    csv(root / "metadata.csv", frame)
    for i, row in enumerate(rows[:4]):
        (jpeg if row["filename"].endswith(("jpeg", "jpg")) else png)(root / "images" / row["filename"], image(80 + i))
    return root


def build_montgomery(root: Path) -> Path:
    readings = {"MCUCXR_0001_0": "Patient's Sex: F \nPatient's Age: 027Y\nnormal \n",
                "MCUCXR_0104_1": "Patient's Sex: M\nPatient's Age: 047Y\nright upper lobe cavitary tuberculosis\n",
                "MCUCXR_0113_1": "Patient's Sex: F \nPatient's Age: 084Y\nleft upper lobe TB, on Rx\n",
                "MCUCXR_0117_1": "Patient's Sex: F \nPatient's Age: 085Y\n"
                                 "stable CXR since 6M; off Rx since 6M (same pt as MCUCXR_0113_1)\n",
                "MCUCXR_0162_1": "Patient's Sex: M \nPatient's Age: 049Y\nright upper lobe TB\n",
                "MCUCXR_0166_1": "Patient's Sex: M \nPatient's Age: 049Y\nNO REPORT (same pt as MCUCXR_0162_1)\n"}
    for i, (stem, text) in enumerate(readings.items()):
        png(root / "CXR_png" / f"{stem}.png", image(90 + i))
        (root / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
        (root / "ClinicalReadings" / f"{stem}.txt").write_text(text)
        left, right = np.zeros((24, 20), np.uint8), np.zeros((24, 20), np.uint8)
        left[4:20, 2:9], right[4:20, 11:18] = 255, 255
        png(root / "ManualMask" / "leftMask" / f"{stem}.png", left)
        png(root / "ManualMask" / "rightMask" / f"{stem}.png", right)
    return root


def build_shenzhen(root: Path) -> Path:
    readings = {"CHNCXR_0001_0": "male 45yrs\nnormal\n", "CHNCXR_0327_1": "femal 32yrs\nPTB in the left upper field\n",
                "CHNCXR_0400_1": "male  16month\n\nbilateral PTB\n", "CHNCXR_0002_0": "female24yrs\nnormal\n",
                "CHNCXR_0003_0": "male35yrs\nnormal\n", "CHNCXR_0330_1": "male , 29yrs  \t\nbilateral secondary PTB\n",
                "CHNCXR_0331_1": "female 35yrs\nright PTB\n", "CHNCXR_0332_1": "male 42\nleft PTB\n"}
    for i, (stem, text) in enumerate(readings.items()):
        png(root / "CXR_png" / f"{stem}.png", image(95 + i))
        (root / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
        (root / "ClinicalReadings" / f"{stem}.txt").write_text(text)
    png(root / "mask" / "CHNCXR_0001_0_mask.png", np.full((24, 20), 255, np.uint8))
    return root


def build_manifest(root: Path, fmt: str = "csv") -> Path:
    rows = [{"image_path": "img/a.png", "patient_id": "p1", "view": "PA", "sex": "F", "age": 40,
             "label_cardiomegaly": 1, "label_pneumothorax": "", "report": "Cardiomegaly.", "site": "north"},
            {"image_path": "img/b.png", "patient_id": "p2", "view": "LAT", "sex": "", "age": "",
             "label_cardiomegaly": 0, "label_pneumothorax": -1, "report": "", "site": "south"}]
    for i, row in enumerate(rows):
        png(root / row["image_path"], image(99 + i))
    if fmt == "csv":
        csv(root / "manifest.csv", pd.DataFrame(rows))
    else:
        (root / "manifest.jsonl").write_text("\n".join(json.dumps({k: (None if v == "" else v) for k, v in r.items()})
                                                       for r in rows) + "\n")
    return root


def blobs(seed: int, size: int = 96) -> np.ndarray:
    """A smooth radiograph-like uint8 image (Gaussian blobs on a gradient), spanning 0..255."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = 0.3 * y
    for _ in range(6):
        cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.25)
        out = out + rng.uniform(-1, 1) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
    out = (out - out.min()) / (out.max() - out.min())
    return np.round(out * 255).astype(np.uint8)


def radiograph(seed: int, size: int = 256, texture_seed: int | None = None) -> np.ndarray:
    """``blobs`` (the outline) with fine texture (smoothed noise, its own seed), as radiographs have: what tells
    two films alike in outline apart."""
    rng = np.random.default_rng(10_000 + (seed if texture_seed is None else texture_seed))
    texture = ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.0)
    return np.clip(blobs(seed, size) + 40 * texture / texture.std(), 0, 255).astype(np.uint8)


def image_table(root: Path, n: int = 12, prefix: str = "s", patients: int | None = None):
    """A record table over ``n`` PNGs of assorted sizes (one 16-bit, one DICOM) with two labels."""
    from radlab.data.records import RecordTable

    records = []
    for i in range(n):
        pixels = blobs(1000 + i, 64 + 8 * (i % 3))[:, : 50 + 10 * (i % 4)]
        if i == 1:
            name = dicom(root / f"{prefix}{i}.dcm", pixels.astype(np.uint16) * 16, bits=12).name
        elif i == 2:
            name = png(root / f"{prefix}{i}.png", pixels.astype(np.uint16) * 257).name
        else:
            name = png(root / f"{prefix}{i}.png", pixels).name
        records.append({"id": f"{prefix}{i}", "image_path": name, "source": prefix,
                        "patient_id": f"{prefix}p{i % (patients or n)}", "report": f"report {i}",
                        "label_cardiomegaly": float(i % 2), "label_edema": np.nan if i % 3 else 1.0})
    return RecordTable.from_records(records, root)
