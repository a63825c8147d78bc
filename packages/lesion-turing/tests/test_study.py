"""Image intake, the study database and the report, without a web server."""

import io
import json
import math
import sqlite3
import struct

import numpy as np
import pytest
from lesion_turing import Rejected, Study, StudyError, StudySpec, build_report, create_study, open_study, write_report
from lesion_turing.images import ImageError, contact_sheet, list_images, reencode, select_study
from lesion_turing.report import render_html
from PIL import Image


def write_images(folder, n, shape, suffix, seed):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"img{i}{suffix}")
    return folder


@pytest.fixture
def study(tmp_path):
    real = write_images(tmp_path / "real", 3, (40, 56, 3), ".jpg", 0)
    fake = write_images(tmp_path / "fake", 3, (32, 32, 3), ".png", 1)
    create_study(tmp_path / "s.sqlite", StudySpec(str(real), str(fake), n=6, size=32, diagnoses=("nevus", "melanoma")))
    s = Study(tmp_path / "s.sqlite")
    yield s
    s.close()


def png_chunks(data: bytes) -> list[bytes]:
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks.append(kind)
        pos += 12 + length
    return chunks


def test_list_images_stays_inside_the_folder(tmp_path):
    outside = write_images(tmp_path / "outside", 1, (8, 8, 3), ".png", 0)
    folder = write_images(tmp_path / "real", 2, (8, 8, 3), ".png", 1)
    (folder / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "sub" / "deep.jpg")
    Image.new("RGB", (8, 8)).save(folder / "ISIC_1_superpixels.png")
    Image.new("RGB", (8, 8)).save(folder / ".hidden.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "escape.png").symlink_to(outside / "img0.png")
    (folder / "linked_dir").symlink_to(outside, target_is_directory=True)
    (folder / "inside_link.png").symlink_to(folder / "img0.png")
    names = sorted(p.relative_to(folder.resolve()).as_posix() for p in list_images(folder))
    assert names == ["img0.png", "img0.png", "img1.png", "sub/deep.jpg"]  # the inside link resolves to img0
    with pytest.raises(ImageError, match="not a directory"):
        list_images(tmp_path / "missing")


def test_reencode_gives_identical_format_and_byte_length_without_metadata(tmp_path):
    rng = np.random.default_rng(0)
    jpg, png = tmp_path / "a.jpg", tmp_path / "b.png"
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(jpg, exif=exif, quality=70)
    rgba = Image.fromarray(rng.integers(0, 256, (50, 50, 4), dtype=np.uint8), "RGBA")
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", "StyleGAN generator")
    rgba.save(png, pnginfo=info, dpi=(300, 300))
    a, b = reencode(jpg, 64, 90), reencode(png, 64, 0)
    assert len(a) == len(b)
    assert png_chunks(a) == png_chunks(b) and set(png_chunks(a)) == {b"IHDR", b"IDAT", b"IEND"}
    for data in (a, b):
        im = Image.open(io.BytesIO(data))
        assert (im.size, im.mode, im.info) == ((64, 64), "RGB", {})
    assert b"CameraMaker" not in a and b"StyleGAN" not in b
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageError, match="broken.png"):
        reencode(tmp_path / "broken.png", 64, 90)


def test_reencode_scales_16_bit_grey(tmp_path):
    Image.fromarray(np.full((20, 20), 65535 // 2, np.uint16)).save(tmp_path / "g16.png")
    out = np.asarray(Image.open(io.BytesIO(reencode(tmp_path / "g16.png", 16, 0))))
    assert out.shape == (16, 16, 3) and np.all(np.abs(out.astype(int) - 127) <= 1)  # not clipped to 255


def test_reencode_centre_crops(tmp_path):
    im = np.zeros((40, 80, 3), np.uint8)
    im[:, 20:60] = 255  # the centre square is white, the sides black
    Image.fromarray(im).save(tmp_path / "wide.png")
    out = np.asarray(Image.open(io.BytesIO(reencode(tmp_path / "wide.png", 16, 0))))
    assert out.min() > 200  # without the crop the edges would be black


def test_select_study_is_balanced_and_reproducible(tmp_path):
    real = [tmp_path / f"r{i}" for i in range(10)]
    fake = [tmp_path / f"f{i}" for i in range(7)]
    chosen = select_study(real, fake, 6, seed=3)
    assert sum(s for _, s in chosen) == 3 and len(chosen) == 6
    assert chosen == select_study(real, fake, 6, seed=3) != select_study(real, fake, 6, seed=4)
    with pytest.raises(ImageError, match="even"):
        select_study(real, fake, 5, 0)
    with pytest.raises(ImageError, match="synthetic folder has 7"):
        select_study(real, fake, 16, 0)


def test_create_study_is_atomic_and_frozen(tmp_path):
    real = write_images(tmp_path / "real", 3, (16, 16, 3), ".png", 0)
    fake = write_images(tmp_path / "fake", 3, (16, 16, 3), ".png", 1)
    (fake / "img2.png").write_bytes(b"garbage")
    db = tmp_path / "s.sqlite"
    with pytest.raises(ImageError, match="img2.png"):
        create_study(db, StudySpec(str(real), str(fake), n=6, size=16))
    assert list(tmp_path.glob("*s.sqlite*")) == []  # nothing half-made left behind
    write_images(fake, 3, (16, 16, 3), ".png", 2)
    spec = StudySpec(str(real), str(fake), n=6, size=16)
    open_study(db, spec).close()
    open_study(db).close()
    with pytest.raises(StudyError, match="other settings \\(n, size\\)"):
        open_study(db, StudySpec(str(real), str(fake), n=4, size=32))
    with pytest.raises(StudyError, match="give the real and synthetic folders"):
        open_study(tmp_path / "other.sqlite")
    (tmp_path / "junk.sqlite").write_text("not sqlite")
    with pytest.raises(StudyError, match="junk.sqlite"):
        Study(tmp_path / "junk.sqlite")


def test_quiz_rules(study):
    token = study.add_rater("  Dr   Ada ")
    state = study.state(token)
    assert state == {"name": "Dr Ada", "total": 6, "answered": 0, "diagnoses": ["nevus", "melanoma"],
                     "item": state["item"]}
    with pytest.raises(Rejected) as exc:
        study.add_rater("Dr Ada")
    assert exc.value.status == 409
    other = study.add_rater("Bob")
    first = state["item"]
    for bad, status in [
        (dict(item=study.state(other)["item"]), 404),  # someone else's image
        (dict(item="nope"), 404),
        (dict(confidence=6), 400),
        (dict(confidence=True), 400),
        (dict(diagnosis="flu"), 400),
    ]:
        args = dict(item=first, said_synthetic=True, confidence=3, diagnosis=None) | bad
        with pytest.raises(Rejected) as exc:
            study.answer(token, **args)
        assert exc.value.status == status, bad
    study.answer(token, first, True, 3, "melanoma")
    with pytest.raises(Rejected) as exc:
        study.answer(token, first, False, 2, None)  # a repeated submission
    assert exc.value.status == 409
    assert study.state(token)["answered"] == 1 and len(study.answers()) == 1
    assert study.answers()[0]["diagnosis"] == "melanoma" and study.answers()[0]["said_synthetic"] == 1


def test_orders_are_shuffled_per_rater(study):
    orders = set()
    for i in range(12):
        token = study.add_rater(f"r{i}")
        rater_id = study._rater(token)[0]
        orders.add(tuple(r[0] for r in study._query(
            "SELECT image_id FROM items WHERE rater_id = ? ORDER BY position", (rater_id,))))
    assert len(orders) > 6  # 720 orders possible; identical ones would mean no shuffle


def test_answers_survive_reopening(study, tmp_path):
    token = study.add_rater("Ada")
    for _ in range(2):
        study.answer(token, study.state(token)["item"], False, 4, None)
    # A second connection sees the committed answers at once (as a restarted server would).
    again = Study(tmp_path / "s.sqlite")
    assert again.state(token)["answered"] == 2
    assert sqlite3.connect(tmp_path / "s.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()


def test_report_matches_hand_computation(study, tmp_path):
    truth = {i["image"]: i["synthetic"] for i in study.images()}
    said = {}
    for name, rule in [("a", lambda syn, k: syn), ("b", lambda syn, k: k % 2 == 0)]:
        token = study.add_rater(name)
        for k in range(6 if name == "a" else 4):
            item = study.state(token)["item"]
            image = study._query("SELECT image_id FROM items WHERE token = ?", (item,))[0][0]
            said[name, image] = rule(truth[image], k)
            study.answer(token, item, said[name, image], 1 + k % 5, None)
    report = build_report(study)
    b = [(truth[i], s) for (n, i), s in said.items() if n == "b"]
    correct_b = sum(t == s for t, s in b)
    rb = report["raters"][1]
    assert (rb["name"], rb["answered"], rb["complete"]) == ("b", 4, False)
    assert (rb["accuracy"]["successes"], rb["accuracy"]["n"]) == (correct_b, 4)
    assert rb["sensitivity"]["n"] == sum(t for t, _ in b)
    assert report["raters"][0]["accuracy"]["successes"] == 6  # rater a is always right
    assert report["raters"][0]["p_value_vs_chance"] == pytest.approx(2 / 64)
    # Fleiss' kappa by hand over the 4 images both raters judged: P_i is 1 when they agree, else 0.
    both = [i for (n, i) in said if n == "b"]
    agree = [said["a", i] == said["b", i] for i in both]
    p_syn = sum(said["a", i] + said["b", i] for i in both) / 8
    p_e = p_syn**2 + (1 - p_syn) ** 2
    expected = (np.mean(agree) - p_e) / (1 - p_e) if p_e < 1 else math.nan
    assert report["fleiss_kappa"]["images"] == 4
    assert report["fleiss_kappa"]["kappa"] == pytest.approx(expected, nan_ok=True)
    paths = write_report(tmp_path / "s.sqlite", tmp_path / "out")
    data = json.loads(paths["report.json"].read_text())
    assert data["overall"]["n"] == 10 and "Fleiss" in paths["report.html"].read_text()
    assert Image.open(paths["fooled.png"]).size[0] > 0


def test_contact_sheet_layout():
    tile = io.BytesIO()
    Image.new("RGB", (10, 10), "red").save(tile, "PNG")
    sheet = contact_sheet([tile.getvalue()] * 5, [f"#{i}" for i in range(5)], columns=4, tile=20)
    assert sheet.size == (80, 2 * (20 + 22))
    assert sheet.getpixel((5, 5)) == (255, 0, 0) and sheet.getpixel((70, 60)) == (255, 255, 255)


def _answer_all(study, name, said_synthetic):
    """A rater who answers every image by `said_synthetic(image_id, is_synthetic)`."""
    truth = {i["image"]: i["synthetic"] for i in study.images()}
    token = study.add_rater(name)
    while (item := study.state(token)["item"]) is not None:
        image = study._query("SELECT image_id FROM items WHERE token = ?", (item,))[0][0]
        study.answer(token, item, said_synthetic(image, truth[image]), 3, None)


def test_fooled_lists_only_fakes_someone_called_real_by_rate_then_count(study):
    fakes = sorted(i["image"] for i in study.images() if i["synthetic"])
    _answer_all(study, "spots everything", lambda image, synthetic: synthetic)
    report = build_report(study)
    assert report["fooled"] == []
    assert "No rater has called a synthetic image real." in render_html(report, "fooled.png")
    assert "1 rater," in render_html(report, "fooled.png") and "1 raters" not in render_html(report, "fooled.png")
    # fakes[0] fools 1 of 2 raters, fakes[1] 2 of 3 raters (the third rater stops early), fakes[2] nobody.
    _answer_all(study, "fooled by two", lambda image, synthetic: synthetic and image not in fakes[:2])
    token = study.add_rater("partial")
    while (item := study.state(token)["item"]) is not None:
        image = study._query("SELECT image_id FROM items WHERE token = ?", (item,))[0][0]
        if image in fakes[:2]:
            study.answer(token, item, image != fakes[1], 3, None)
        else:
            study.answer(token, item, image in fakes, 3, None)
    fooled = build_report(study)["fooled"]
    assert [(f["image"], f["said_real"], f["raters"]) for f in fooled] == [(fakes[1], 2, 3), (fakes[0], 1, 3)]


def test_database_is_private_and_holds_no_admin_token(tmp_path):
    real = write_images(tmp_path / "real", 1, (16, 16, 3), ".png", 0)
    fake = write_images(tmp_path / "fake", 1, (16, 16, 3), ".png", 1)
    db = tmp_path / "new" / "deeper" / "s.sqlite"
    create_study(db, StudySpec(str(real), str(fake), n=2, size=16))
    assert db.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700 and db.parent.stat().st_mode & 0o777 == 0o700
    study = Study(db)
    token = study.new_admin_token()
    study.add_rater("Ada")
    assert study.is_admin(token) and not study.is_admin(token[:-1] + "x")
    later = study.new_admin_token()  # a restart replaces the admin link
    assert study.is_admin(later) and not study.is_admin(token)
    for path in (db, db.with_name("s.sqlite-wal")):
        assert path.stat().st_mode & 0o777 == 0o600, path
        assert later.encode() not in path.read_bytes()
    study.close()
    keys = {k for (k,) in sqlite3.connect(db).execute("SELECT key FROM meta")}
    assert "admin_token" not in keys and "admin_token_sha256" in keys


def test_a_study_with_the_admin_token_in_clear_keeps_only_its_hash(study, tmp_path):
    study.close()
    con = sqlite3.connect(tmp_path / "s.sqlite")
    with con:
        con.execute("DELETE FROM meta WHERE key = 'admin_token_sha256'")
        con.execute("INSERT INTO meta VALUES ('admin_token', 'OldToken_0123456789')")
    con.close()
    again = Study(tmp_path / "s.sqlite")
    assert again.is_admin("OldToken_0123456789")  # the old link keeps working
    again.close()
    keys = {k for (k,) in sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT key FROM meta")}
    assert "admin_token" not in keys
