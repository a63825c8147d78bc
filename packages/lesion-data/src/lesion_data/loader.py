"""Random minibatches from a prepared store, straight from the memory-mapped level to the device.

Every epoch is a permutation drawn from (seed, epoch), identical on all ranks; rank r takes the
r-th of ``world_size`` equal disjoint slices (the tail that does not divide is dropped that epoch,
as DistributedSampler(drop_last=True) does). A batch is one fancy-indexed read of the memmap, one
host-to-device copy of uint8 data, then augmentation and conversion to float [-1, 1] on the device.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .augment import apply_dihedral, dihedral_codes
from .store import PreparedStore, StoreError


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
        self._images = self.store.images(resolution)
        self._masks = self.store.masks(resolution) if with_masks else None
        self._labels = self.store.labels
        # Augmentation stream differs per rank so ranks do not flip in lockstep.
        self._aug = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, rank, 1]).generate_state(1)[0]))
        self.epoch, self.pos = 0, 0
        self._share = self._epoch_share(0)

    def _epoch_share(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.store))
        return perm[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]

    def __len__(self) -> int:
        """Full batches per epoch on this rank."""
        return max(1, self.per_rank // self.batch_size)

    def __iter__(self):
        return self

    def _next_indices(self) -> np.ndarray:
        parts, need = [], self.batch_size
        while need:
            take = self._share[self.pos : self.pos + need]
            parts.append(take)
            need -= len(take)
            self.pos += len(take)
            if self.pos >= self.per_rank:
                self.epoch, self.pos = self.epoch + 1, 0
                self._share = self._epoch_share(self.epoch)
        return np.concatenate(parts)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(array)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def __next__(self) -> dict[str, torch.Tensor]:
        # Sorted reads keep memmap access sequential; the order inside a batch carries no meaning.
        idx = np.sort(self._next_indices())
        # Flips and the NHWC -> NCHW copy run on uint8 (a quarter of the float traffic); the
        # conversion to float [-1, 1] is the last step.
        images = self._to_device(self._images[idx]).permute(0, 3, 1, 2).contiguous()
        masks = self._to_device(self._masks[idx]).unsqueeze(1) if self._masks is not None else None
        if self.augment:
            codes = dihedral_codes(len(idx), self._aug, self.device)
            images = apply_dihedral(images, codes)
            masks = apply_dihedral(masks, codes) if masks is not None else None
        batch = {"images": images.float().div_(127.5).sub_(1), "labels": self._to_device(self._labels[idx])}
        if masks is not None:
            batch["masks"] = masks.float()
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "aug_rng": self._aug.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._share = self._epoch_share(self.epoch)
        self._aug.set_state(state["aug_rng"])


__all__ = ["StoreBatches"]
