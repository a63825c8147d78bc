import numpy as np
import pytest
import torch
from lesion_data.loader import StoreBatches
from lesion_data.store import PreparedStore, StoreError, write_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    n, r = 50, 8
    images = np.zeros((n, r, r, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(n) * 5  # row id recoverable from one pixel (level 8 is exact)
    masks = np.zeros((n, r, r), np.uint8)
    masks[:, :4, :4] = 1
    labels = np.arange(n) % 3
    return PreparedStore(write_store(tmp_path_factory.mktemp("s") / "s", images, masks, labels, ("a", "b", "c"),
                                     source={}, preprocessing={}))


def _ids(batch):
    return ((batch["images"][:, 0, 0, 0] + 1) * 127.5 / 5).round().long()


def test_batch_format(store):
    batch = next(StoreBatches(store, 8, 4, augment=False, with_masks=True))
    assert batch["images"].shape == (4, 3, 8, 8) and batch["images"].dtype == torch.float32
    assert batch["images"].min() >= -1 and batch["images"].max() <= 1 and batch["images"].is_contiguous()
    assert batch["labels"].dtype == torch.long
    assert batch["masks"].shape == (4, 1, 8, 8) and set(batch["masks"].unique().tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(batch["labels"].numpy(), _ids(batch).numpy() % 3)
    assert "masks" not in next(StoreBatches(store, 8, 4))


def test_epoch_covers_rank_share_and_ranks_are_disjoint(store):
    seen = []
    for rank in range(3):
        it = StoreBatches(store, 8, 4, seed=1, rank=rank, world_size=3, augment=False)
        ids = torch.cat([_ids(next(it)) for _ in range(4)])  # 16 = 50 // 3 per rank
        assert len(set(ids.tolist())) == 16
        seen.append(set(ids.tolist()))
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])


def test_deterministic_and_resumable(store):
    a = StoreBatches(store, 8, 5, seed=3, with_masks=True)
    b = StoreBatches(store, 8, 5, seed=3, with_masks=True)
    for _ in range(12):  # crosses epoch boundaries
        x, y = next(a), next(b)
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["masks"], y["masks"])
    state = a.state_dict()
    expected = [next(a) for _ in range(3)]
    c = StoreBatches(store, 8, 5, seed=3, with_masks=True)
    c.load_state_dict(state)
    for e in expected:
        assert torch.equal(next(c)["images"], e["images"])


def test_augmentation_keeps_masks_aligned(store):
    it = StoreBatches(store, 8, 16, with_masks=True, seed=0)
    batch = next(it)
    # The marker pixel (0,0) lies inside the 4x4 mask corner; after any flip/rotation it must still.
    flat = batch["images"][:, 0].flatten(1)
    marked = batch["images"][:, 0] > -1
    assert torch.all((batch["masks"][:, 0] > 0)[marked])
    assert flat.shape[0] == 16
    corners = batch["masks"][:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert len({tuple(c.tolist()) for c in corners}) > 1, "augmentation never moved the lesion"


def test_errors(store, tmp_path):
    with pytest.raises(StoreError, match="no level 32"):
        StoreBatches(store, 32, 4)
    with pytest.raises(StoreError, match="cannot feed"):
        StoreBatches(store, 8, 4, rank=0, world_size=64)
    bare = write_store(tmp_path / "b", np.zeros((3, 4, 4, 3), np.uint8), None, [0, 1, 2], ("a",), source={},
                       preprocessing={})
    with pytest.raises(StoreError, match="no masks"):
        StoreBatches(bare, 4, 2, with_masks=True)


def test_prefetch_gives_the_same_batches_and_resumes(store):
    plain = StoreBatches(store, 8, 7, seed=2, with_masks=True, prefetch=0)
    ahead = StoreBatches(store, 8, 7, seed=2, with_masks=True, prefetch=3)
    for _ in range(9):  # crosses epoch boundaries
        x, y = next(plain), next(ahead)
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["labels"], y["labels"])
        assert torch.equal(x["masks"], y["masks"])
    assert ahead.state_dict()["epoch"] == plain.state_dict()["epoch"]
    assert ahead.state_dict()["pos"] == plain.state_dict()["pos"]
    state = ahead.state_dict()
    expected = [next(plain)["images"] for _ in range(3)]
    ahead.load_state_dict(state)  # discards what the thread had read ahead
    assert all(torch.equal(next(ahead)["images"], e) for e in expected)
    ahead.close()
    assert ahead._queue is None


def test_batches_kept_by_the_caller_survive_the_reused_read_buffer(store):
    reused = StoreBatches(store, 8, 5, seed=3, with_masks=True, augment=False)
    assert reused._reuse
    kept = [next(reused) for _ in range(4)]
    fresh = StoreBatches(store, 8, 5, seed=3, with_masks=True, augment=False, prefetch=1)
    for old in kept:
        new = next(fresh)
        assert all(torch.equal(old[k], new[k]) for k in ("images", "labels", "masks"))
    fresh.close()


def test_dropping_a_prefetching_iterator_stops_its_thread(store):
    import gc
    import threading
    import time

    before = threading.active_count()
    it = StoreBatches(store, 8, 4, prefetch=2)
    next(it)
    assert threading.active_count() == before + 1
    del it
    gc.collect()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
