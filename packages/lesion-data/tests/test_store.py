import json

import numpy as np
import pytest
from lesion_data.store import PreparedStore, StoreError, StoreWriter, downsample_levels, write_store
from PIL import Image


def _random(n=5, r=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, r, r, 3), dtype=np.uint8), rng.integers(0, 2, (n, r, r), dtype=np.uint8),
            rng.integers(-1, 3, n))


def test_round_trip_every_level(tmp_path):
    images, masks, labels = _random()
    path = write_store(tmp_path / "s", images, masks, labels, ("a", "b", "c"), source={"layout": "test"},
                       preprocessing={}, ids=list("vwxyz"))
    store = PreparedStore(path)
    assert store.resolutions == [4, 8, 16] and len(store) == 5
    assert store.ids == list("vwxyz")
    np.testing.assert_array_equal(store.labels, labels)
    for res in store.resolutions:
        f = 16 // res
        area = images.astype(np.float64).reshape(5, res, f, res, f, 3).mean(axis=(2, 4))
        np.testing.assert_array_equal(store.images(res), np.rint(area).astype(np.uint8))
        assert isinstance(store.images(res), np.memmap)
        nearest = np.stack([np.asarray(Image.fromarray(m).resize((res, res), Image.NEAREST)) for m in masks])
        np.testing.assert_array_equal(store.masks(res), nearest)
    m = store.manifest
    assert m["counts"] == {"a": int((labels == 0).sum()), "b": int((labels == 1).sum()),
                           "c": int((labels == 2).sum()), "unknown": int((labels < 0).sum())}
    assert m["content_hash"].startswith("sha256:") and m["source"] == {"layout": "test"}


def test_content_hash_tracks_content(tmp_path):
    images, masks, labels = _random()
    h = lambda p: PreparedStore(p).manifest["content_hash"]  # noqa: E731
    a = write_store(tmp_path / "a", images, masks, labels, ("x",), source={}, preprocessing={})
    b = write_store(tmp_path / "b", images, masks, labels, ("x",), source={}, preprocessing={})
    images[0, 0, 0, 0] ^= 1
    c = write_store(tmp_path / "c", images, masks, labels, ("x",), source={}, preprocessing={})
    assert h(a) == h(b) != h(c)


def test_store_without_masks(tmp_path):
    images, _, labels = _random(r=8)
    store = PreparedStore(write_store(tmp_path / "s", images, None, labels, ("x",), source={}, preprocessing={}))
    assert store.masks(8) is None and not store.has_masks


def test_missing_and_half_written_stores_are_rejected(tmp_path):
    with pytest.raises(StoreError, match="no prepared store"):
        PreparedStore(tmp_path / "nothing")
    images, masks, labels = _random()
    writer = StoreWriter(tmp_path / "s", 5, 16, True)
    writer.append(images[:2], masks[:2], labels[:2], ["0", "1"])
    # A crash now leaves only the temporary folder; the target does not exist.
    assert not (tmp_path / "s").exists()
    with pytest.raises(StoreError, match="no prepared store"):
        PreparedStore(tmp_path / "s")
    with pytest.raises(StoreError, match="incomplete store"):
        PreparedStore(writer.tmp)
    writer.abort()
    assert not writer.tmp.exists()


def test_truncated_array_or_bad_manifest_is_rejected(tmp_path):
    images, masks, labels = _random()
    path = write_store(tmp_path / "s", images, masks, labels, ("x",), source={}, preprocessing={})
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(StoreError, match="not a complete"):
        PreparedStore(path)
    (path / "manifest.json").write_text(json.dumps(manifest))
    np.save(path / "images_8.npy", np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(StoreError, match="images_8.npy"):
        PreparedStore(path)


def test_skipped_rows_shrink_the_store(tmp_path):
    images, masks, labels = _random()
    writer = StoreWriter(tmp_path / "s", 5, 16, True)
    writer.append(images[:3], masks[:3], labels[:3], ["0", "1", "2"])
    store = PreparedStore(writer.finish(("x",), {}, {}))
    assert len(store) == 3
    np.testing.assert_array_equal(store.masks(16), masks[:3])


def test_bad_resolution():
    with pytest.raises(StoreError, match="power of two"):
        downsample_levels(np.zeros((1, 12, 12, 3), np.uint8), None, 12)


def test_a_store_without_rows_is_refused(tmp_path):
    writer = StoreWriter(tmp_path / "s", 3, 8, False)
    with pytest.raises(StoreError, match="no usable images"):
        writer.finish(("x",), {}, {})
    assert list(tmp_path.iterdir()) == []
