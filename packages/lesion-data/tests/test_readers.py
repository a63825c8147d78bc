import os
import pathlib

import numpy as np
import pytest
from lesion_data import CLASS_NAMES
from lesion_data.prepare import prepare_store
from lesion_data.readers import SEVEN_CLASS_NAMES, Source, SourceError, detect_layout, open_source
from lesion_data.store import PreparedStore

SAMPLE = os.environ.get("LESION_SAMPLE_ISIC2017")
needs_sample = pytest.mark.skipif(not SAMPLE or not pathlib.Path(SAMPLE).is_dir(),
                                  reason="LESION_SAMPLE_ISIC2017 not set or missing")


@needs_sample
def test_real_isic2017_sample_loads_and_prepares(tmp_path):
    source = open_source(SAMPLE)
    assert source.layout == "isic2017" and source.class_names == CLASS_NAMES
    assert source.problems == []
    assert len(source.records) == 210 and all(r.mask is not None for r in source.records)
    assert np.bincount([r.label for r in source.records]).tolist() == [70, 70, 70]
    subset = Source(source.layout, source.root, source.class_names, source.records[:12])
    store = PreparedStore(prepare_store(subset, tmp_path / "s", 32, workers=1, progress=False))
    assert len(store) == 12 and store.resolutions == [4, 8, 16, 32]
    masks = store.masks(32)
    assert set(np.unique(masks)) == {0, 1}
    # The crop is centred on the lesion's bounding box unless the image edge forced a shift.
    for m in masks:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if rows[0] > 0 and rows[-1] < 31 and cols[0] > 0 and cols[-1] < 31:
            assert abs((rows[0] + rows[-1]) / 2 - 15.5) <= 1.5 and abs((cols[0] + cols[-1]) / 2 - 15.5) <= 1.5
    assert store.labels.tolist() == [r.label for r in source.records[:12]]


def test_isic2017_layout(isic2017_tree):
    source = open_source(isic2017_tree)
    assert source.layout == "isic2017" and source.problems == []
    assert [(r.id, r.label, r.split) for r in source.records] == [
        ("ISIC_0000001", 1, "Training"), ("ISIC_0000002", 0, "Training"), ("ISIC_0000003", 2, "Training")]
    assert all(r.mask.name == f"{r.id}_segmentation.png" for r in source.records)
    assert not any("superpixels" in r.image.name for r in source.records)


def test_isic2018_layout_merges_tasks(isic2018_tree):
    source = open_source(isic2018_tree)
    assert source.layout == "isic2018" and source.class_names == SEVEN_CLASS_NAMES and source.problems == []
    by_id = {r.id: r for r in source.records}
    assert by_id["ISIC_0000010"].mask is not None and by_id["ISIC_0000010"].label is None
    assert by_id["ISIC_0024306"].label == SEVEN_CLASS_NAMES.index("nevus")
    assert by_id["ISIC_0024307"].label == SEVEN_CLASS_NAMES.index("melanoma")


def test_ham10000_layout(ham_tree):
    source = open_source(ham_tree)
    assert source.layout == "ham10000" and source.problems == []
    assert {r.id: r.label for r in source.records} == {"ISIC_0027419": 2, "ISIC_0032000": 1}
    assert all(r.mask is None for r in source.records)


def test_plain_folder_and_class_subfolders(tmp_path, write_image, write_mask):
    flat = tmp_path / "flat"
    write_image(flat / "a.png", seed=1)
    write_image(flat / "b.jpg", seed=2)
    write_mask(flat / "b_mask.png")
    write_mask(flat / "a_segmentation.png")
    source = open_source(flat)
    assert source.layout == "folder" and source.class_names == ()
    assert [(r.id, r.label, r.mask.name) for r in source.records] == [("a", None, "a_segmentation.png"),
                                                                      ("b", None, "b_mask.png")]
    classes = tmp_path / "classes"
    write_image(classes / "benign" / "x.jpg", seed=3)
    write_image(classes / "malignant" / "y.jpg", seed=4)
    source = open_source(classes)
    assert source.class_names == ("benign", "malignant")
    assert {r.id: r.label for r in source.records} == {"x": 0, "y": 1}


def test_detect_layout(isic2017_tree, isic2018_tree, ham_tree, tmp_path):
    assert [detect_layout(p) for p in (isic2017_tree, isic2018_tree, ham_tree, tmp_path)] == [
        "isic2017", "isic2018", "ham10000", "folder"]


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(SourceError, match="not a folder"):
        open_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"empty: no images found"):
        open_source(tmp_path / "empty")


def test_csv_rows_naming_missing_files(isic2017_tree, ham_tree):
    (isic2017_tree / "ISIC-2017_Training_Data" / "ISIC_0000002.jpg").unlink()
    source = open_source(isic2017_tree)
    assert len(source.problems) == 1 and "ISIC_0000002" in source.problems[0]
    assert "ISIC-2017_Training_Part3_GroundTruth.csv:3" in source.problems[0]
    assert [r.id for r in source.records] == ["ISIC_0000001", "ISIC_0000003"]
    (ham_tree / "HAM10000_images_part_2" / "ISIC_0032000.jpg").unlink()
    problems = open_source(ham_tree).problems
    assert len(problems) == 1 and "ISIC_0032000" in problems[0] and "missing file" in problems[0]


def test_bad_label_rows_and_missing_masks(isic2017_tree):
    csv = isic2017_tree / "ISIC-2017_Training_Part3_GroundTruth.csv"
    csv.write_text(csv.read_text().replace("ISIC_0000003,0.0,1.0", "ISIC_0000003,1.0,1.0"))
    (isic2017_tree / "ISIC-2017_Training_Part1_GroundTruth" / "ISIC_0000001_segmentation.png").unlink()
    source = open_source(isic2017_tree)
    assert [r.id for r in source.records] == ["ISIC_0000002"]
    assert any("both melanoma and seborrheic keratosis" in p and "ISIC_0000003" in p for p in source.problems)
    assert any("ISIC_0000001.jpg: no mask" in p for p in source.problems)


def test_csv_missing_column_names_the_file(isic2017_tree):
    (isic2017_tree / "ISIC-2017_Training_Part3_GroundTruth.csv").write_text("image_id,melanoma\nISIC_0000001,1\n")
    with pytest.raises(SourceError, match=r"Part3_GroundTruth.csv: missing column\(s\) seborrheic_keratosis"):
        open_source(isic2017_tree)


def test_isic2017_split_selection(isic2017_tree, write_image):
    write_image(isic2017_tree / "ISIC-2017_Validation_Data" / "ISIC_0001000.jpg", seed=4)
    both = open_source(isic2017_tree)
    assert {r.split for r in both.records} == {"Training", "Validation"}
    validation = open_source(isic2017_tree, splits=["Validation"])
    assert [(r.id, r.label, r.mask) for r in validation.records] == [("ISIC_0001000", None, None)]
    with pytest.raises(SourceError, match="split Test_v2 not found"):
        open_source(isic2017_tree, splits=["Test_v2"])
    with pytest.raises(SourceError, match="ISIC layouts only"):
        open_source(isic2017_tree, layout="folder", splits=["Training"])


def test_isic2018_and_ham10000_bad_rows(isic2018_tree, ham_tree, write_mask):
    csv = isic2018_tree / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    csv.write_text(csv.read_text().replace("ISIC_0024307,1.0,0.0", "ISIC_0024307,1.0,1.0")
                   + "ISIC_0099999,1.0,0.0,0.0,0.0,0.0,0.0,0.0\n")
    source = open_source(isic2018_tree)
    assert {r.id for r in source.records} == {"ISIC_0000010", "ISIC_0000011", "ISIC_0024306"}
    assert any("ISIC_0024307 is not one-hot" in p for p in source.problems)
    assert any("ISIC_0099999 names a missing file" in p for p in source.problems)
    meta = ham_tree / "HAM10000_metadata.csv"
    meta.write_text(meta.read_text().replace(",mel,", ",xyz,"))
    write_mask(ham_tree / "HAM10000_segmentations_lesion_tschandl" / "ISIC_0027419_segmentation.png")
    source = open_source(ham_tree)
    assert [(r.id, r.mask.name) for r in source.records] == [("ISIC_0027419", "ISIC_0027419_segmentation.png")]
    assert len(source.problems) == 1 and "unknown diagnosis 'xyz'" in source.problems[0]
