import json

import numpy as np
import pytest
from lesion_data.phantom import generate_phantoms
from lesion_data.prepare import PrepareError, open_or_prepare, prepare_phantom_store, prepare_store
from lesion_data.preprocess import BadInput, Task, crop_box, process
from lesion_data.store import PreparedStore, StoreError
from PIL import Image


def test_round_trip_equals_resampled_input(tmp_path, write_image, write_mask):
    root = tmp_path / "src"
    image = write_image(root / "a.png", size=(60, 44), seed=1)
    mask = write_mask(root / "a_segmentation.png", size=(60, 44), box=(20, 10, 36, 30))
    store = PreparedStore(prepare_store(root, tmp_path / "s", 16, margin=0.25, workers=1, progress=False))
    box = crop_box((60, 44), np.asarray(Image.open(mask)) > 0, 0.25)
    # Bounding box 16x20 centred at (28, 20); side 20 * 1.5 = 30.
    assert box == pytest.approx((13.0, 5.0, 43.0, 35.0))
    top = np.asarray(Image.open(image).resize((16, 16), Image.BOX, box=box))
    top_mask = np.asarray(Image.open(mask).resize((16, 16), Image.NEAREST, box=box)) > 0
    for res in (16, 8, 4):
        f = 16 // res
        expected = np.rint(top.astype(np.float64).reshape(res, f, res, f, 3).mean(axis=(1, 3)))
        np.testing.assert_array_equal(store.images(res)[0], expected)
        nearest = np.asarray(Image.fromarray(top_mask.astype(np.uint8)).resize((res, res), Image.NEAREST))
        np.testing.assert_array_equal(store.masks(res)[0], nearest)
    assert store.manifest["preprocessing"]["margin"] == 0.25 and store.manifest["skipped"] == []


def test_crop_box_without_mask_and_at_the_edge():
    assert crop_box((60, 40), None, 0.3) == (10.0, 0.0, 50.0, 40.0)
    assert crop_box((60, 40), np.zeros((40, 60), bool), 0.3) == (10.0, 0.0, 50.0, 40.0)
    mask = np.zeros((40, 60), bool)
    mask[0:10, 50:60] = True  # lesion in the corner: the square is shifted inside, not padded
    assert crop_box((60, 40), mask, 0.5) == (40.0, 0.0, 60.0, 20.0)


def test_jpeg_draft_decoding_matches_full_decoding(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((640, 480), Image.BICUBIC))
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    fast = process(Task(tmp_path / "a.jpg", None, 32, draft=True))[0].astype(int)
    full = process(Task(tmp_path / "a.jpg", None, 32, draft=False))[0].astype(int)
    assert np.abs(fast - full).mean() < 1.5


def _bad_tree(root, write_image, write_mask):
    write_image(root / "good.png", seed=1)
    write_mask(root / "good_mask.png")
    write_image(root / "grey.png", mode="L")
    write_mask(root / "grey_mask.png")
    write_image(root / "alpha.png", mode="RGBA")
    write_mask(root / "alpha_mask.png")
    write_image(root / "tiny.png", seed=2)
    write_mask(root / "tiny_mask.png", size=(20, 15), box=(1, 1, 5, 5))
    (root / "garbage.jpg").write_bytes(b"this is not a jpeg")
    write_mask(root / "garbage_mask.png")
    write_image(root / "cut.jpg", size=(200, 150), seed=3)
    data = (root / "cut.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(data[: len(data) // 2])
    write_mask(root / "cut_mask.png", size=(200, 150))


@pytest.mark.parametrize("name, message", [
    ("grey.png", "grey-scale image (mode L)"),
    ("alpha.png", "alpha channel (mode RGBA)"),
    ("tiny.png", "mask is 20x15 but its image tiny.png is 40x30"),
    ("garbage.jpg", "unreadable image"),
    ("cut.jpg", "truncated image"),
])
def test_each_bad_input_has_a_one_line_message_naming_the_file(tmp_path, write_image, write_mask, name, message):
    _bad_tree(tmp_path, write_image, write_mask)
    stem = name.rsplit(".", 1)[0]
    mask = tmp_path / f"{stem}_mask.png"
    with pytest.raises(BadInput) as err:
        process(Task(tmp_path / name, mask, 8))
    text = str(err.value)
    assert message in text and "\n" not in text
    assert text.startswith(str(tmp_path / name) if "mask is" not in text else str(mask))


def test_prepare_reports_every_bad_file_and_writes_nothing(tmp_path, write_image, write_mask):
    src = tmp_path / "src"
    _bad_tree(src, write_image, write_mask)
    out = tmp_path / "out"
    with pytest.raises(PrepareError) as err:
        prepare_store(src, out, 8, workers=2, progress=False)
    problems = err.value.problems
    assert len(problems) == 5
    for name in ("grey.png", "alpha.png", "tiny_mask.png", "garbage.jpg", "cut.jpg"):
        assert sum(name in p for p in problems) == 1, (name, problems)
    assert not out.exists() and list(tmp_path.iterdir()) == [src], "no store and no temporary leftovers"
    store = PreparedStore(prepare_store(src, out, 8, skip_bad=True, workers=2, progress=False))
    assert len(store) == 1 and store.ids == ["good"] and len(store.manifest["skipped"]) == 5
    assert json.loads((out / "manifest.json").read_text())["counts"] == {"unknown": 1}


def test_reader_problems_are_reported_with_decode_problems(tmp_path, isic2017_tree):
    (isic2017_tree / "ISIC-2017_Training_Data" / "ISIC_0000002.jpg").unlink()
    (isic2017_tree / "ISIC-2017_Training_Data" / "ISIC_0000003.jpg").write_bytes(b"")
    with pytest.raises(PrepareError) as err:
        prepare_store(isic2017_tree, tmp_path / "out", 8, workers=1, progress=False)
    assert len(err.value.problems) == 2
    assert any("ISIC_0000002" in p and "missing file" in p for p in err.value.problems)
    assert any("ISIC_0000003.jpg" in p for p in err.value.problems)
    store = PreparedStore(prepare_store(isic2017_tree, tmp_path / "out", 8, skip_bad=True, progress=False))
    assert store.ids == ["ISIC_0000001"] and store.labels.tolist() == [1]
    assert store.manifest["counts"] == {"nevus": 0, "melanoma": 1, "seborrheic_keratosis": 0, "unknown": 0}


def test_parallel_prepare_equals_serial(tmp_path, isic2017_tree):
    a = PreparedStore(prepare_store(isic2017_tree, tmp_path / "a", 16, workers=1, progress=False))
    b = PreparedStore(prepare_store(isic2017_tree, tmp_path / "b", 16, workers=2, progress=False))
    assert a.manifest["content_hash"] == b.manifest["content_hash"]
    assert a.ids == b.ids


def test_prepare_phantom_store_in_parallel(tmp_path):
    store = PreparedStore(prepare_phantom_store(tmp_path / "p", 16, n=70, seed=4, workers=2, progress=False))
    images, masks, labels = generate_phantoms(70, 16, seed=4)
    np.testing.assert_array_equal(store.images(16), images)
    np.testing.assert_array_equal(store.masks(16), masks)
    assert store.manifest["source"]["layout"] == "phantom"


def test_images_without_masks_among_masked_ones_are_reported(tmp_path, write_image, write_mask):
    write_image(tmp_path / "src" / "a.png", seed=1)
    write_mask(tmp_path / "src" / "a_mask.png")
    write_image(tmp_path / "src" / "b.png", seed=2)
    with pytest.raises(PrepareError) as err:
        prepare_store(tmp_path / "src", tmp_path / "out", 8, workers=1, progress=False)
    assert len(err.value.problems) == 1 and "b.png: no mask" in err.value.problems[0]
    store = PreparedStore(prepare_store(tmp_path / "src", tmp_path / "out", 8, skip_bad=True, progress=False))
    assert store.ids == ["a"] and store.has_masks


def test_never_replaces_a_folder_that_is_not_a_store(tmp_path, isic2017_tree):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(StoreError, match="not a prepared store; refusing"):
        prepare_store(isic2017_tree, precious, 8, workers=1, progress=False)
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["isic2017", "precious"]
    # An old store is replaced; with keep_existing a finished one is kept (concurrent cache builds).
    first = prepare_phantom_store(tmp_path / "p", 8, n=6, seed=1, progress=False)
    stamp = PreparedStore(first).manifest["content_hash"]
    prepare_phantom_store(tmp_path / "p", 8, n=6, seed=2, progress=False, keep_existing=True)
    assert PreparedStore(first).manifest["content_hash"] == stamp
    prepare_phantom_store(tmp_path / "p", 8, n=6, seed=2, progress=False)
    assert PreparedStore(first).manifest["content_hash"] != stamp


def test_open_or_prepare_caches_a_folder_by_its_file_tree(isic2017_tree, tmp_path, write_image):
    cache = tmp_path / "cache"
    store = open_or_prepare(isic2017_tree, 8, cache=cache, progress=False)
    assert store.path.parent == cache / "stores" and len(store) == 3
    stamp = store.path.stat().st_mtime_ns
    # The same tree through another path: the same cached store, not prepared again.
    alias = tmp_path / "alias"
    alias.symlink_to(isic2017_tree)
    assert open_or_prepare(alias, 8, cache=cache, progress=False).path == store.path
    assert store.path.stat().st_mtime_ns == stamp
    # A rewritten image (a changed tree) prepares it again; another resolution is another entry.
    write_image(isic2017_tree / "ISIC-2017_Training_Data" / "ISIC_0000001.jpg", seed=5)
    changed = open_or_prepare(isic2017_tree, 8, cache=cache, progress=False)
    assert changed.path != store.path
    assert open_or_prepare(isic2017_tree, 16, cache=cache, progress=False).resolution == 16
    assert len({p.name for p in (cache / "stores").iterdir()}) == 3


def test_open_or_prepare_opens_stores_and_phantoms_as_they_are(tmp_path):
    cache = tmp_path / "cache"
    phantoms = open_or_prepare(None, 8, phantom_count=6, cache=cache)
    assert phantoms.path.parent == cache and len(phantoms) == 6
    assert open_or_prepare(phantoms.path, 4, cache=cache).path == phantoms.path  # a store: never copied
    with pytest.raises(StoreError, match="has no 16 px level"):
        open_or_prepare(phantoms.path, 16, cache=cache)
    with pytest.raises(StoreError, match="does not exist"):
        open_or_prepare(tmp_path / "nowhere", 8, cache=cache)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(StoreError, match="neither a prepared store nor a dataset folder"):
        open_or_prepare(tmp_path / "file.txt", 8, cache=cache)
    assert sorted(p.name for p in cache.iterdir()) == [phantoms.path.name]
