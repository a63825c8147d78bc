"""Contact sheets of lesions for people to look at (mask outlines drawn in green)."""

from __future__ import annotations

import numpy as np

_OUTLINE = np.array([40, 220, 90], np.uint8)


def outline(masks: np.ndarray) -> np.ndarray:
    """Boolean (N, H, W): lesion pixels with a background 4-neighbour."""
    m = masks.astype(bool)
    padded = np.pad(m, ((0, 0), (1, 1), (1, 1)), mode="edge")
    inner = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    return m & ~inner


def contact_sheet(
    images: np.ndarray,
    masks: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    columns: int = 8,
    num_classes: int | None = None,
    gap: int = 2,
) -> np.ndarray:
    """Grid uint8 (rows*H, columns*W, 3) of NHWC uint8 images. With ``labels``: one row per class
    holding that class's first ``columns`` images; with ``masks``: lesion outlines overlaid."""
    images = np.asarray(images)
    if masks is not None:
        images = images.copy()
        images[outline(np.asarray(masks))] = _OUTLINE
    if labels is not None:
        labels = np.asarray(labels)
        k = num_classes or int(labels.max()) + 1
        rows = [np.flatnonzero(labels == c)[:columns] for c in range(k)]
    else:
        rows = [np.arange(i, min(i + columns, len(images))) for i in range(0, len(images), columns)]
    n, h, w = len(rows), images.shape[1], images.shape[2]
    sheet = np.full((n * (h + gap) - gap, columns * (w + gap) - gap, 3), 255, np.uint8)
    for r, idx in enumerate(rows):
        for c, i in enumerate(idx):
            sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = images[i]
    return sheet


def preview_sheet(store, columns: int = 8, max_size: int = 128) -> np.ndarray:
    """Contact sheet of a PreparedStore: one row per class (or the first rows when unlabelled),
    mask outlines drawn, at the largest level <= ``max_size``."""
    res = max([r for r in store.resolutions if r <= max_size] or store.resolutions[:1])
    labels = np.asarray(store.labels)
    if (labels >= 0).any():
        # The first `columns` rows of every class, gathered without reading the whole level.
        keep = np.concatenate([np.flatnonzero(labels == k)[:columns] for k in range(len(store.class_names))])
        keep.sort()
        sub_labels = labels[keep]
    else:
        keep, sub_labels = np.arange(min(len(store), 4 * columns)), None
    masks = store.masks(res)
    return contact_sheet(store.images(res)[keep], None if masks is None else masks[keep], sub_labels, columns,
                         num_classes=len(store.class_names) or None)


__all__ = ["contact_sheet", "preview_sheet", "outline"]
