import numpy as np
import pytest
from lesion_data import CLASS_NAMES
from lesion_data.phantom import PRIORS, generate_phantoms
from lesion_data.prepare import phantom_store
from lesion_data.store import PreparedStore


def test_shapes_dtypes_and_values():
    images, masks, labels = generate_phantoms(6, 32, seed=3)
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    assert masks.shape == (6, 32, 32) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}
    assert labels.dtype == np.int64 and set(labels) <= {0, 1, 2}
    assert all(m.sum() > 0 for m in masks), "every phantom has a lesion"


def test_deterministic_and_independent_of_batching():
    a = generate_phantoms(10, 32, seed=7)
    b = generate_phantoms(10, 32, seed=7, chunk=3)
    part = generate_phantoms(4, 32, seed=7, start=6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a, part):
        np.testing.assert_array_equal(x[6:], y)
    other = generate_phantoms(10, 32, seed=8)
    assert not np.array_equal(a[0], other[0])


def test_same_lesion_at_every_resolution():
    _, small, la = generate_phantoms(5, 16, seed=1)
    _, large, lb = generate_phantoms(5, 64, seed=1)
    np.testing.assert_array_equal(la, lb)
    area_small, area_large = small.mean(axis=(1, 2)), large.mean(axis=(1, 2))
    np.testing.assert_allclose(area_small, area_large, atol=0.06)


def test_rejects_bad_sizes():
    with pytest.raises(ValueError, match="power of two"):
        generate_phantoms(2, 48, seed=0)


def test_class_priors_and_balanced_option():
    _, _, labels = generate_phantoms(600, 4, seed=0)
    freq = np.bincount(labels, minlength=3) / len(labels)
    np.testing.assert_allclose(freq, PRIORS, atol=0.05)
    _, _, balanced = generate_phantoms(9, 4, seed=0, balanced=True)
    assert np.bincount(balanced, minlength=3).tolist() == [3, 3, 3]


def test_classes_differ_in_simple_statistics():
    images, masks, labels = generate_phantoms(240, 32, seed=5, balanced=True)
    area = masks.mean(axis=(1, 2))
    lesion = images.astype(np.float32) * masks[..., None]
    n_px = masks.sum(axis=(1, 2))[:, None]
    mean = lesion.sum(axis=(1, 2)) / n_px
    spread = np.sqrt((((images - mean[:, None, None]) ** 2) * masks[..., None]).sum(axis=(1, 2)) / n_px).mean(1)
    brightness = mean.mean(1)
    per = lambda x: [x[labels == k].mean() for k in range(3)]  # noqa: E731
    nev, mel, ker = per(area)
    assert mel > ker > nev, (nev, mel, ker)
    assert per(spread)[1] > per(spread)[0]
    assert per(brightness)[2] > per(brightness)[0]
    # A single threshold on lesion area tells melanoma from nevus far above chance.
    two = labels != 2
    threshold = np.median(area[two])
    accuracy = ((area[two] > threshold) == (labels[two] == 1)).mean()
    assert accuracy > 0.8, accuracy


def test_phantom_store_is_built_once_and_cached(tmp_path):
    path = phantom_store(resolution=16, n=40, seed=2, root=tmp_path)
    store = PreparedStore(path)
    assert store.resolutions == [4, 8, 16] and len(store) == 40 and store.class_names == CLASS_NAMES
    images, masks, labels = generate_phantoms(40, 16, seed=2)
    np.testing.assert_array_equal(store.images(16), images)
    np.testing.assert_array_equal(store.masks(16), masks)
    np.testing.assert_array_equal(store.labels, labels)
    assert store.manifest["counts"]["nevus"] == int((labels == 0).sum())
    mtime = (path / "manifest.json").stat().st_mtime_ns
    assert phantom_store(resolution=16, n=40, seed=2, root=tmp_path) == path
    assert (path / "manifest.json").stat().st_mtime_ns == mtime


def test_phantom_store_uses_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path))
    assert phantom_store(resolution=8, n=5).parent == tmp_path
