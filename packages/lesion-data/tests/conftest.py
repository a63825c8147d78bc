"""Tiny fake dataset trees in the official layouts, written to tmp_path."""

import pathlib

import numpy as np
import pytest
from PIL import Image


def _write_image(path: pathlib.Path, size=(40, 30), seed=0, mode="RGB") -> pathlib.Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if channels == 1 else arr, mode).save(path)
    return path


def _write_mask(path: pathlib.Path, size=(40, 30), box=(10, 5, 25, 20)) -> pathlib.Path:
    arr = np.zeros((size[1], size[0]), np.uint8)
    arr[box[1] : box[3], box[0] : box[2]] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def write_image():
    return _write_image


@pytest.fixture
def write_mask():
    return _write_mask


@pytest.fixture
def isic2017_tree(tmp_path):
    root = tmp_path / "isic2017"
    data, gt = root / "ISIC-2017_Training_Data", root / "ISIC-2017_Training_Part1_GroundTruth"
    ids = ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]
    for i, image_id in enumerate(ids):
        _write_image(data / f"{image_id}.jpg", seed=i)
        _write_image(data / f"{image_id}_superpixels.png", seed=9)
        _write_mask(gt / f"{image_id}_segmentation.png")
    (data / "ISIC-2017_Training_Data_metadata.csv").write_text("image_id,age_approximate,sex\n")
    (root / "ISIC-2017_Training_Part3_GroundTruth.csv").write_text(
        "image_id,melanoma,seborrheic_keratosis\r\nISIC_0000001,1.0,0.0\r\nISIC_0000002,0.0,0.0\r\n"
        "ISIC_0000003,0.0,1.0\r\n")
    return root


@pytest.fixture
def isic2018_tree(tmp_path):
    root = tmp_path / "isic2018"
    for i, image_id in enumerate(["ISIC_0000010", "ISIC_0000011"]):
        _write_image(root / "ISIC2018_Task1-2_Training_Input" / f"{image_id}.jpg", seed=i)
        _write_mask(root / "ISIC2018_Task1_Training_GroundTruth" / f"{image_id}_segmentation.png")
    gt = root / "ISIC2018_Task3_Training_GroundTruth"
    gt.mkdir(parents=True)
    for i, image_id in enumerate(["ISIC_0024306", "ISIC_0024307"]):
        _write_image(root / "ISIC2018_Task3_Training_Input" / f"{image_id}.jpg", seed=5 + i)
    (gt / "ISIC2018_Task3_Training_GroundTruth.csv").write_text(
        "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_0024306,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n"
        "ISIC_0024307,1.0,0.0,0.0,0.0,0.0,0.0,0.0\n")
    return root


@pytest.fixture
def ham_tree(tmp_path):
    root = tmp_path / "ham"
    _write_image(root / "HAM10000_images_part_1" / "ISIC_0027419.jpg", seed=1)
    _write_image(root / "HAM10000_images_part_2" / "ISIC_0032000.jpg", seed=2)
    (root / "HAM10000_metadata.csv").write_text(
        "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
        "HAM_0000118,ISIC_0027419,bkl,histo,80.0,male,scalp\n"
        "HAM_0000119,ISIC_0032000,mel,histo,60.0,female,back\n")
    return root
