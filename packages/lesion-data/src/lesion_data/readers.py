"""Readers for the public dermoscopy layouts, auto-detected by ``open_source(path)``.

Each reader lists records (image path, mask path or None, label or None, id) without decoding any
image; decoding and validation happen in ``lesion_data.preprocess``. Problems found while reading
the listing (a CSV row naming a missing file, a label that cannot be parsed, a missing mask) are
collected as one-line messages in ``Source.problems`` so that every one of them can be reported at
once instead of failing on the first.

Supported layouts (official names, as unpacked from the challenge zips):

- ``isic2017``: ``ISIC-2017_{Training,Validation,Test_v2}_Data/ISIC_*.jpg`` (``*_superpixels.png``
  skipped), masks ``ISIC-2017_<split>_Part1_GroundTruth/ISIC_*_segmentation.png``, labels
  ``ISIC-2017_<split>_Part3_GroundTruth.csv`` (``image_id,melanoma,seborrheic_keratosis``).
- ``isic2018``: ``ISIC2018_Task1-2_<split>_Input`` + ``ISIC2018_Task1_<split>_GroundTruth`` masks, and
  ``ISIC2018_Task3_<split>_Input`` + ``ISIC2018_Task3_<split>_GroundTruth[/...].csv`` (one-hot
  ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``); records of the same id are merged.
- ``ham10000``: ``HAM10000_metadata.csv`` (``lesion_id,image_id,dx,...``) and the images anywhere below
  the root; masks optional (``*_segmentation.png``, e.g. HAM10000_segmentations_lesion_tschandl).
- ``folder``: images in the folder, or one subfolder per class (subfolder names are the classes);
  optional masks beside the images as ``<stem>_segmentation.png`` or ``<stem>_mask.png``.

Images without a mask in a source where others have one are reported by ``prepare_store``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
import re
from typing import Collection, Sequence

from . import CLASS_NAMES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
MASK_SUFFIXES = ("_segmentation", "_mask")
# Contact sheets the apps write next to their images (prepare_data's and mask_deform's preview.png,
# pggan_sample's grid.png and interpolation.png, evaluate's grid_<name>.png): so that one command's
# output folder can be the next one's input, no folder listing takes them for data.
SHEET_NAME = re.compile(r"(preview|grid|interpolation)(_.*)?\.png", re.IGNORECASE)
# ISIC-2018 Task 3 / HAM10000 diagnoses; the first two keep ISIC-2017's indices (nevus 0, melanoma 1),
# and index 2 is "benign keratosis" (seborrheic keratoses, solar lentigines, LPLK).
SEVEN_CLASS_NAMES = ("nevus", "melanoma", "benign_keratosis", "basal_cell_carcinoma", "actinic_keratosis",
                     "dermatofibroma", "vascular_lesion")
_SEVEN_CODES = ("NV", "MEL", "BKL", "BCC", "AKIEC", "DF", "VASC")
ISIC2017_SPLITS = ("Training", "Validation", "Test_v2")
ISIC2018_SPLITS = ("Training", "Validation", "Test")


class SourceError(ValueError):
    """The source folder cannot be read at all (missing, empty, unknown layout)."""


@dataclasses.dataclass(frozen=True)
class Record:
    image: pathlib.Path
    mask: pathlib.Path | None
    label: int | None
    id: str
    split: str | None = None


@dataclasses.dataclass
class Source:
    layout: str
    root: pathlib.Path
    class_names: tuple[str, ...]
    records: list[Record]
    problems: list[str] = dataclasses.field(default_factory=list)

    def describe(self) -> dict:
        splits = sorted({r.split for r in self.records if r.split})
        return {"layout": self.layout, "path": str(self.root), "splits": splits, "num_records": len(self.records)}


def is_image_file(path: str | os.PathLike, suffixes: Collection[str] = IMAGE_SUFFIXES) -> bool:
    """The one rule for which files of a folder are images (every folder listing of every package
    uses it): an image suffix, not hidden, not ISIC's ``*_superpixels.png``, not a contact sheet
    (``preview.png``, ``grid.png``, ``grid_*.png``, ``interpolation.png``; see ``SHEET_NAME``)."""
    path = pathlib.Path(path)
    return (path.suffix.lower() in suffixes and not path.name.startswith(".")
            and not path.stem.endswith("_superpixels") and not SHEET_NAME.fullmatch(path.name))


def list_image_files(folder: str | os.PathLike, suffixes: Collection[str] = IMAGE_SUFFIXES,
                     recursive: bool = False) -> list[pathlib.Path]:
    """Sorted image files of ``folder`` (and below it if ``recursive``, hidden folders skipped) by
    :func:`is_image_file`; symbolic links to folders are not followed."""
    root = pathlib.Path(folder)
    if not recursive:
        return sorted(p for p in root.iterdir() if p.is_file() and is_image_file(p, suffixes))
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [p for p in (pathlib.Path(dirpath) / n for n in filenames) if is_image_file(p, suffixes) and p.is_file()]
    return sorted(found)


def _is_image(path: pathlib.Path) -> bool:
    return is_image_file(path) and not path.stem.endswith(MASK_SUFFIXES)


def _images_in(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and _is_image(p)}


def _read_csv(path: pathlib.Path, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    """Rows with their line numbers; raises SourceError naming the file when it lacks a column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in required if c not in fields]
            if missing:
                raise SourceError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(fields) or 'none'})")
            return [(i + 2, {k.strip(): (v or "").strip() for k, v in row.items() if k}) for i, row in
                    enumerate(reader)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SourceError(f"{path}: unreadable CSV ({e})") from None


def _flag(value: str) -> bool:
    return float(value) >= 0.5


def read_isic2017(root: pathlib.Path, splits: tuple[str, ...] | None = None) -> Source:
    records, problems = [], []
    for split in splits or ISIC2017_SPLITS:
        data = root / f"ISIC-2017_{split}_Data"
        if not data.is_dir():
            if splits:
                raise SourceError(f"{data}: split {split} not found")
            continue
        images = _images_in(data)
        mask_dir = root / f"ISIC-2017_{split}_Part1_GroundTruth"
        labels: dict[str, int] = {}
        csv_path = root / f"ISIC-2017_{split}_Part3_GroundTruth.csv"
        if csv_path.is_file():
            for line, row in _read_csv(csv_path, ("image_id", "melanoma", "seborrheic_keratosis")):
                image_id = row["image_id"]
                if image_id not in images:
                    problems.append(f"{csv_path}:{line}: {image_id} names a missing file {data / (image_id + '.jpg')}")
                    continue
                try:
                    mel, sk = _flag(row["melanoma"]), _flag(row["seborrheic_keratosis"])
                except ValueError:
                    problems.append(f"{csv_path}:{line}: {image_id} has non-numeric labels "
                                    f"{row['melanoma']!r}, {row['seborrheic_keratosis']!r}")
                    labels[image_id] = -2
                    continue
                if mel and sk:
                    problems.append(f"{csv_path}:{line}: {image_id} is labelled both melanoma and seborrheic keratosis")
                    labels[image_id] = -2
                    continue
                labels[image_id] = 1 if mel else 2 if sk else 0
        for image_id, path in images.items():
            mask = None
            if mask_dir.is_dir():
                mask = mask_dir / f"{image_id}_segmentation.png"
                if not mask.is_file():
                    problems.append(f"{path}: no mask {mask}")
                    continue
            if labels.get(image_id) == -2:
                continue
            records.append(Record(path, mask, labels.get(image_id), image_id, split))
    return Source("isic2017", root, CLASS_NAMES, records, problems)


def _find_task3_csv(root: pathlib.Path, split: str) -> pathlib.Path | None:
    name = f"ISIC2018_Task3_{split}_GroundTruth"
    for candidate in (root / name / f"{name}.csv", root / f"{name}.csv"):
        if candidate.is_file():
            return candidate
    return None


def read_isic2018(root: pathlib.Path, splits: tuple[str, ...] | None = None) -> Source:
    merged: dict[str, dict] = {}
    problems: list[str] = []
    for split in splits or ISIC2018_SPLITS:
        seg_input = root / f"ISIC2018_Task1-2_{split}_Input"
        if splits and not seg_input.is_dir() and not (root / f"ISIC2018_Task3_{split}_Input").is_dir():
            raise SourceError(f"{root}: split {split} not found (no ISIC2018_Task1-2_{split}_Input or Task3 input)")
        if seg_input.is_dir():
            mask_dir = root / f"ISIC2018_Task1_{split}_GroundTruth"
            for image_id, path in _images_in(seg_input).items():
                entry = merged.setdefault(image_id, {"image": path, "split": split})
                if mask_dir.is_dir():
                    mask = mask_dir / f"{image_id}_segmentation.png"
                    if mask.is_file():
                        entry["mask"] = mask
                    else:
                        problems.append(f"{path}: no mask {mask}")
                        entry["bad"] = True
        cls_input = root / f"ISIC2018_Task3_{split}_Input"
        if cls_input.is_dir():
            images = _images_in(cls_input)
            for image_id, path in images.items():
                merged.setdefault(image_id, {"image": path, "split": split})
            csv_path = _find_task3_csv(root, split)
            if csv_path is not None:
                for line, row in _read_csv(csv_path, ("image",) + _SEVEN_CODES):
                    image_id = row["image"]
                    if image_id not in images:
                        problems.append(f"{csv_path}:{line}: {image_id} names a missing file "
                                        f"{cls_input / (image_id + '.jpg')}")
                        continue
                    try:
                        hot = [_flag(row[c]) for c in _SEVEN_CODES]
                    except ValueError:
                        hot = []
                    if sum(hot) != 1:
                        problems.append(f"{csv_path}:{line}: {image_id} is not one-hot over {','.join(_SEVEN_CODES)}")
                        merged[image_id]["bad"] = True
                        continue
                    merged[image_id]["label"] = hot.index(True)
    records = [Record(e["image"], e.get("mask"), e.get("label"), i, e["split"])
               for i, e in sorted(merged.items()) if not e.get("bad")]
    return Source("isic2018", root, SEVEN_CLASS_NAMES, records, problems)


def _walk_images(root: pathlib.Path) -> tuple[dict[str, pathlib.Path], dict[str, pathlib.Path]]:
    """All images and masks below root, by id (mask ids without their _segmentation/_mask suffix)."""
    images, masks = {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = pathlib.Path(dirpath) / name
            if not is_image_file(path):
                continue
            stem = path.stem
            for suffix in MASK_SUFFIXES:
                if stem.endswith(suffix):
                    masks[stem[: -len(suffix)]] = path
                    break
            else:
                images[stem] = path
    return images, masks


def read_ham10000(root: pathlib.Path) -> Source:
    csv_path = next((p for p in (root / "HAM10000_metadata.csv", root / "HAM10000_metadata") if p.is_file()), None)
    if csv_path is None:
        raise SourceError(f"{root}: no HAM10000_metadata.csv")
    images, masks = _walk_images(root)
    codes = {c.lower(): k for k, c in enumerate(_SEVEN_CODES)}
    records, problems = [], []
    for line, row in _read_csv(csv_path, ("lesion_id", "image_id", "dx")):
        image_id, dx = row["image_id"], row["dx"].lower()
        if image_id not in images:
            problems.append(f"{csv_path}:{line}: {image_id} names a missing file (no {image_id}.jpg below {root})")
        elif dx not in codes:
            problems.append(f"{csv_path}:{line}: {image_id} has unknown diagnosis {row['dx']!r}")
        else:
            records.append(Record(images[image_id], masks.get(image_id), codes[dx], image_id))
    return Source("ham10000", root, SEVEN_CLASS_NAMES, records, problems)


def read_folder(root: pathlib.Path) -> Source:
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = [d for d in subdirs if any(_is_image(p) for p in d.iterdir() if p.is_file())]
    problems: list[str] = []
    records: list[Record] = []
    groups = [(root, None)] + [(d, k) for k, d in enumerate(classes)]
    for folder, label in groups:
        masks = {p.stem[: -len(s)]: p for p in list_image_files(folder) for s in MASK_SUFFIXES if p.stem.endswith(s)}
        for image_id, path in _images_in(folder).items():
            if classes and label is None:
                problems.append(f"{path}: image outside the class subfolders ({', '.join(d.name for d in classes)})")
                continue
            records.append(Record(path, masks.get(image_id), label, image_id))
    return Source("folder", root, tuple(d.name for d in classes), records, problems)


_READERS = {"isic2017": read_isic2017, "isic2018": read_isic2018, "ham10000": read_ham10000, "folder": read_folder}


def detect_layout(root: pathlib.Path) -> str:
    names = [p.name for p in root.iterdir()]
    if any(re.fullmatch(r"ISIC-2017_.+_Data", n) for n in names):
        return "isic2017"
    if any(re.fullmatch(r"ISIC2018_Task[0-9-]+_.+_Input", n) for n in names):
        return "isic2018"
    if any(n.startswith("HAM10000_metadata") for n in names):
        return "ham10000"
    return "folder"


def open_source(path: str | os.PathLike, layout: str | None = None, splits: Sequence[str] | None = None) -> Source:
    """Records of a dataset folder; the layout is detected unless given; ``splits`` (ISIC layouts
    only, e.g. ("Training",)) restricts the challenge splits read. Raises SourceError when the folder
    is missing or holds no images; per-file problems are listed in ``.problems``."""
    root = pathlib.Path(path).expanduser()
    if not root.is_dir():
        raise SourceError(f"{root}: not a folder")
    layout = layout or detect_layout(root)
    if layout not in _READERS:
        raise SourceError(f"{root}: unknown layout {layout!r} (choose from {', '.join(_READERS)})")
    if splits:
        if layout not in ("isic2017", "isic2018"):
            raise SourceError(f"{root}: splits apply to the ISIC layouts only, not {layout}")
        source = _READERS[layout](root, tuple(splits))
    else:
        source = _READERS[layout](root)
    if not source.records and not source.problems:
        raise SourceError(f"{root}: no images found (looked for the {layout} layout; "
                          "supported: ISIC-2017, ISIC-2018, HAM10000, a folder of images or class subfolders)")
    return source


__all__ = ["open_source", "Source", "Record", "SourceError", "detect_layout", "SEVEN_CLASS_NAMES",
           "is_image_file", "list_image_files", "IMAGE_SUFFIXES", "SHEET_NAME",
           "read_isic2017", "read_isic2018", "read_ham10000", "read_folder"]
