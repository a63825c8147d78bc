"""Random minibatches from a prepared store, straight from the memory-mapped level to the device.

Every epoch is a permutation drawn from (seed, epoch), identical on all ranks; rank r takes the
r-th of ``world_size`` equal disjoint slices (the tail that does not divide is dropped that epoch,
as DistributedSampler(drop_last=True) does). A batch is one fancy-indexed read of the memmap, one
host-to-device copy of uint8 data, then augmentation and conversion to float [-1, 1] on the device.
With ``prefetch`` > 0 (the default on CUDA) a background thread reads the next batches from the
memmap (and pins them) while the device computes; the batches are the same either way.
"""

from __future__ import annotations

import os
import queue
import threading
import weakref

import numpy as np
import torch

from .augment import apply_dihedral, dihedral_codes
from .store import PreparedStore, StoreError


class _IndexStream:
    """Epoch permutations (same on every rank) cut into this rank's disjoint share, batch by batch."""

    def __init__(self, n: int, seed: int, rank: int, world_size: int, batch_size: int):
        self.n, self.seed, self.rank, self.batch_size = n, seed, rank, batch_size
        self.per_rank = n // world_size
        self.seek(0, 0)

    def seek(self, epoch: int, pos: int) -> None:
        self.epoch, self.pos = epoch, pos
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        self.share = perm[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]

    def next(self) -> tuple[np.ndarray, tuple[int, int]]:
        """Sorted indices of the next batch and the (epoch, pos) just after it."""
        parts, need = [], self.batch_size
        while need:
            take = self.share[self.pos : self.pos + need]
            parts.append(take)
            need -= len(take)
            self.pos += len(take)
            if self.pos >= self.per_rank:
                self.seek(self.epoch + 1, 0)
        # Sorted reads keep memmap access sequential; the order inside a batch carries no meaning.
        return np.sort(np.concatenate(parts)), (self.epoch, self.pos)


def _reader(ref: weakref.ref, q: queue.Queue, stop: threading.Event) -> None:
    """Read-ahead loop. It holds the iterator only weakly, so dropping the iterator ends the thread
    (through ``__del__``) and frees the batches it had read ahead."""
    while not stop.is_set():
        owner = ref()
        if owner is None:
            return
        try:
            item = owner._read()
        except BaseException as e:  # surfaced in the training thread by __next__
            item = e
        del owner
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        if isinstance(item, BaseException):
            return


class StoreBatches:
    """Infinite iterator of dicts: images float (B,3,H,W) in [-1,1], labels long (B,), and with
    ``with_masks`` masks float (B,1,H,W) in {0,1}. ``state_dict`` / ``load_state_dict`` resume it."""

    def __init__(
        self,
        store: PreparedStore | str | os.PathLike,
        resolution: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        augment: bool = True,
        with_masks: bool = False,
        device: torch.device | str = "cpu",
        prefetch: int | None = None,
    ):
        self.store = store if isinstance(store, PreparedStore) else PreparedStore(store)
        if resolution not in self.store.resolutions:
            raise StoreError(f"{self.store.path}: no level {resolution} (has {self.store.resolutions})")
        if with_masks and not self.store.has_masks:
            raise StoreError(f"{self.store.path}: store has no masks, but masks were requested")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.per_rank = len(self.store) // world_size
        if self.per_rank == 0 or batch_size < 1:
            raise StoreError(f"{self.store.path}: {len(self.store)} images cannot feed {world_size} ranks "
                             f"with batch size {batch_size}")
        self.resolution, self.batch_size, self.seed = resolution, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.augment, self.with_masks = augment, with_masks
        self.device = torch.device(device)
        # On a CPU device a reader thread would only compete with the model for the same cores.
        self.prefetch = (2 if self.device.type == "cuda" else 0) if prefetch is None else prefetch
        self._images = self.store.images(resolution)
        self._masks = self.store.masks(resolution) if with_masks else None
        self._labels = self.store.labels
        # On CPU without read-ahead each batch is converted (copied) before the next read, so the
        # memmap gathers can reuse one host buffer: no fresh pages to fault in per batch (1.9x the
        # read rate at 1024 px, docs/performance.md).
        self._reuse = self.device.type == "cpu" and self.prefetch == 0
        self._buffers: dict[str, np.ndarray] = {}
        # Augmentation stream differs per rank so ranks do not flip in lockstep.
        self._aug = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, rank, 1]).generate_state(1)[0]))
        self._stream = _IndexStream(len(self.store), seed, rank, world_size, batch_size)
        self.epoch, self.pos = 0, 0  # position after the last batch handed out
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None

    def __len__(self) -> int:
        """Full batches per epoch on this rank."""
        return max(1, self.per_rank // self.batch_size)

    def __iter__(self):
        return self

    def _read(self) -> tuple:
        """Host side of one batch: indices, memmap reads, pinning."""
        idx, after = self._stream.next()
        arrays = [self._gather("images", self._images, idx), self._labels[idx]]
        if self._masks is not None:
            arrays.append(self._gather("masks", self._masks, idx))
        tensors = [torch.from_numpy(a) for a in arrays]
        if self.device.type == "cuda":
            tensors = [t.pin_memory() for t in tensors]
        return after, tensors

    def _gather(self, name: str, array: np.ndarray, idx: np.ndarray) -> np.ndarray:
        if not self._reuse:
            return array[idx]
        buf = self._buffers.get(name)
        if buf is None or len(buf) != len(idx):
            buf = self._buffers[name] = np.empty((len(idx),) + array.shape[1:], array.dtype)
        # mode="clip" (indices are valid anyway): with the default mode NumPy copies through a temporary.
        return np.take(array, idx, axis=0, out=buf, mode="clip")

    def _stop_reader(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join()
            self._queue = self._stop = None

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.prefetch > 0:
            if self._queue is None:
                self._queue, self._stop = queue.Queue(self.prefetch), threading.Event()
                self._thread = threading.Thread(target=_reader, args=(weakref.ref(self), self._queue, self._stop),
                                                daemon=True)
                self._thread.start()
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
        else:
            item = self._read()
        (self.epoch, self.pos), host = item
        images, labels = (t.to(self.device, non_blocking=True) for t in host[:2])
        masks = host[2].to(self.device, non_blocking=True).unsqueeze(1) if len(host) > 2 else None
        # Flips and the NHWC -> NCHW copy run on uint8 (a quarter of the float traffic); the
        # conversion to float [-1, 1] is the last step.
        images = images.permute(0, 3, 1, 2).contiguous()
        if self.augment:
            codes = dihedral_codes(len(labels), self._aug, self.device)
            images = apply_dihedral(images, codes)
            masks = apply_dihedral(masks, codes) if masks is not None else None
        batch = {"images": images.float().div_(127.5).sub_(1), "labels": labels}
        if masks is not None:
            batch["masks"] = masks.float()
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "aug_rng": self._aug.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._stop_reader()  # batches read ahead belong to the old position
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._stream.seek(self.epoch, self.pos)
        self._aug.set_state(state["aug_rng"])

    def close(self) -> None:
        """Stop the read-ahead thread (it is a daemon, so this is optional at exit)."""
        self._stop_reader()

    def __del__(self) -> None:
        if getattr(self, "_stop", None) is not None:
            self._stop.set()


__all__ = ["StoreBatches"]
