"""Procedural dermoscopy-like phantom lesions with exact masks and labels.

Every image is drawn from its own random stream ``default_rng([seed, index])`` and is defined in
continuous coordinates, so image i depends only on (seed, i): any subset, rank or resolution can be
generated alone. Rendering is vectorised over a chunk of images with numpy (no per-pixel Python).

The three classes differ in learnable statistics (see ``_CLASSES``): nevus-like lesions are smaller,
round, uniformly brown with a pigment network and soft edges; melanoma-like ones are larger,
asymmetric, irregularly bordered and multi-coloured (black, blue-grey, red, regression white);
keratosis-like ones are lighter, tan, sharply "stuck on", with a waxy ridged texture and bright
milia-like dots. Class priors follow ISIC-2017 training (1372/374/254 of 2000).
"""

from __future__ import annotations

import numpy as np

# Bump when the rendering changes: it is part of the cache key of phantom stores.
GENERATOR_VERSION = 4
PRIORS = (1372 / 2000, 374 / 2000, 254 / 2000)
_MAX_HAIRS = 8
_DOTS = 14
_ANGLES = 720
_HAIR_POINTS = 12

# Per-class parameter ranges; radii in units of the image half-width.
_CLASSES = {
    0: dict(radius=(0.4, 0.65), elong=(1.0, 1.25), asym=0.025, irreg=0.012, border=0.05, soft=0.035,
            centre_dark=0.35, net=0.28, ridge=0.0, dots=0.25),
    1: dict(radius=(0.55, 0.9), elong=(1.0, 1.6), asym=0.12, irreg=0.02, border=0.3, soft=0.02,
            centre_dark=0.15, net=0.25, ridge=0.0, dots=0.7),
    2: dict(radius=(0.45, 0.72), elong=(1.0, 1.45), asym=0.05, irreg=0.025, border=0.1, soft=0.008,
            centre_dark=0.05, net=0.0, ridge=0.14, dots=0.75),
}
_NEVUS_BROWN = np.array([0.50, 0.29, 0.17])
_MELANOMA_COLOURS = np.array([
    [0.13, 0.08, 0.07],  # black-brown
    [0.30, 0.18, 0.12],  # dark brown
    [0.56, 0.38, 0.27],  # light brown
    [0.42, 0.45, 0.52],  # blue-grey veil
    [0.66, 0.30, 0.29],  # red / vascular
    [0.74, 0.64, 0.62],  # regression white
])
_KERATOSIS_COLOURS = np.array([
    [0.66, 0.48, 0.37],
    [0.56, 0.39, 0.30],
    [0.72, 0.57, 0.46],
    [0.52, 0.41, 0.37],
])
_SKIN_LIGHT = np.array([0.94, 0.80, 0.75])
_SKIN_DARK = np.array([0.78, 0.58, 0.47])
_HAIR = np.array([0.14, 0.10, 0.08])


def _label(u: float, index: int, balanced: bool) -> int:
    if balanced:
        return index % 3
    return int(np.searchsorted(np.cumsum(PRIORS), u * np.sum(PRIORS), side="right").clip(0, 2))


def _draw(seed: int, index: int, balanced: bool) -> dict:
    """All random choices of one image, always drawn in the same order so streams stay aligned."""
    rng = np.random.default_rng([seed, index])
    p: dict = {}
    p["label"] = k = _label(rng.random(), index, balanced)
    c = _CLASSES[k]
    lerp = lambda lo_hi, u: lo_hi[0] + (lo_hi[1] - lo_hi[0]) * u  # noqa: E731
    tone = rng.random() ** 1.5
    p["skin"] = _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * tone + rng.normal(0, 0.015, 3)
    p["skin_grid"] = _fractal_grids(rng, 4, 3)
    p["red_grid"] = _fractal_grids(rng, 3, 1)
    p["red_amp"] = rng.uniform(0.0, 0.12)
    p["centre"] = rng.normal(0, 0.06, 2)
    p["radius"] = lerp(c["radius"], rng.random())
    p["elong"] = lerp(c["elong"], rng.random())
    p["angle"] = rng.uniform(0, np.pi)
    p["harm_amp"] = np.concatenate([rng.normal(0, c["asym"], 3), rng.normal(0, c["irreg"], 7)])
    p["harm_phase"] = rng.uniform(0, 2 * np.pi, 10)
    p["border_grid"] = _fractal_grids(rng, 4, 3)
    p["border"] = c["border"] * rng.uniform(0.6, 1.4)
    p["soft"] = c["soft"] * rng.uniform(0.7, 1.3)
    p["var_grids"] = [_fractal_grids(rng, 4, 1) for _ in range(4)]
    p["warp_grid"] = _fractal_grids(rng, 5, 2)
    p["net_freq"] = rng.uniform(12.0, 20.0)
    p["tex_grid"] = _fractal_grids(rng, 8, 2)
    # Dots and globules: position in the lesion (polar, unit disc), size, and bright (milia-like
    # cyst) or dark (globule) kind, a fixed number of draws per image.
    p["dots_xy"] = rng.random((_DOTS, 2))
    p["dots_size"] = rng.uniform(0.03, 0.08, _DOTS)
    p["dots_kind"] = rng.random(_DOTS)
    # Palette of four colours mixed by smooth random fields: nearly equal colours for nevi (uniform
    # brown), four distinct dermoscopic colours for melanoma, tan shades for keratoses. Jitter is
    # mostly in brightness: independent per-channel jitter turns dark browns olive.
    brown = _NEVUS_BROWN * rng.uniform(0.75, 1.2) * (1 + rng.normal(0, 0.04, 3))
    nevus = brown * (1 + rng.normal(0, 0.06, (4, 1)))
    mel = _MELANOMA_COLOURS[np.r_[0, 1, 2 + rng.permutation(4)[:2]]] * rng.uniform(0.85, 1.15, (4, 1))
    ker = _KERATOSIS_COLOURS * rng.uniform(0.85, 1.15, (4, 1))
    p["palette"] = (nevus, mel, ker)[k]
    p["bright_share"] = (0.0, 0.1, 0.85)[k]
    p["var_sharp"] = (4.0, 14.0, 8.0)[k] * rng.uniform(0.7, 1.3)
    for name in ("centre_dark", "net", "ridge", "dots"):
        p[name] = c[name] * rng.uniform(0.6, 1.4)
    p["opacity"] = rng.uniform(0.8, 1.0)
    hairs = rng.random() < 0.35
    n_hairs = int(rng.integers(1, _MAX_HAIRS + 1))
    p["hairs"] = rng.random((_MAX_HAIRS, 7))[: n_hairs if hairs else 0]
    p["vignette"] = rng.random() < 0.5
    p["vig_radius"] = rng.uniform(1.0, 1.45)
    p["vig_centre"] = rng.normal(0, 0.06, 2)
    p["light_dir"] = rng.uniform(0, 2 * np.pi)
    p["light_amp"] = rng.uniform(0.0, 0.12)
    return p


def _fractal_grids(rng: np.random.Generator, cells: int, octaves: int) -> list[np.ndarray]:
    return [rng.random((cells * 2**o + 1, cells * 2**o + 1)).astype(np.float32) for o in range(octaves)]


def _noise(grids: np.ndarray, size: int) -> np.ndarray:
    """Smoothly interpolated value noise of stacked grids (N, G, G) sampled at pixel centres."""
    g = grids.shape[-1]
    pos = (np.arange(size, dtype=np.float32) + 0.5) * ((g - 1) / size)
    i0 = np.minimum(pos.astype(np.int64), g - 2)
    f = pos - i0.astype(np.float32)
    f = f * f * (3 - 2 * f)
    top = grids[:, i0, :]  # (N, S, G)
    bottom = grids[:, i0 + 1, :]
    rows = top + (bottom - top) * f[None, :, None]
    left, right = rows[:, :, i0], rows[:, :, i0 + 1]
    return left + (right - left) * f[None, None, :]


def _fractal(params: list[dict], key: str, size: int, index: int | None = None) -> np.ndarray:
    """Fractal noise in [0, 1] (mean ~0.5) for every image of the chunk."""
    octaves = [p[key] if index is None else p[key][index] for p in params]
    total, norm = 0.0, 0.0
    for o in range(len(octaves[0])):
        amp = 0.5**o
        total = total + amp * _noise(np.stack([grids[o] for grids in octaves]), size)
        norm += amp
    return total / norm


def _col(params: list[dict], key: str) -> np.ndarray:
    return np.array([p[key] for p in params], dtype=np.float32)


def _smoothstep(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0, 1)
    return t * t * (3 - 2 * t)


def _hair_alpha(hairs: np.ndarray, xs: np.ndarray, ys: np.ndarray, px: float) -> np.ndarray:
    """Coverage of curved hairs (quadratic Bezier polylines), antialiased at any resolution."""
    alpha = np.zeros(xs.shape, np.float32)
    t = np.linspace(0, 1, _HAIR_POINTS, dtype=np.float32)[:, None]
    for x0, y0, ang, length, bend, width, dark in hairs:
        p0 = np.array([x0, y0]) * 2.4 - 1.2
        direction = np.array([np.cos(ang * 2 * np.pi), np.sin(ang * 2 * np.pi)])
        p2 = p0 + direction * (0.8 + 1.6 * length)
        p1 = (p0 + p2) / 2 + np.array([-direction[1], direction[0]]) * (bend - 0.5) * 0.8
        pts = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).astype(np.float32)
        a, b = pts[:-1], pts[1:]
        ab = b - a
        # Distance from every pixel to every segment, minimum over segments.
        ax = xs[None] - a[:, 0, None, None]
        ay = ys[None] - a[:, 1, None, None]
        h = np.clip((ax * ab[:, 0, None, None] + ay * ab[:, 1, None, None]) / (ab**2).sum(1)[:, None, None], 0, 1)
        dist = np.sqrt((ax - h * ab[:, 0, None, None]) ** 2 + (ay - h * ab[:, 1, None, None]) ** 2).min(0)
        w = 0.004 + 0.008 * width
        sigma = max(w, 0.6 * px)
        alpha = np.maximum(alpha, (0.6 + 0.4 * dark) * min(1.0, w / sigma) * np.exp(-((dist / sigma) ** 2)))
    return alpha


def _dots(params: list[dict], colour: np.ndarray, xs: np.ndarray, ys: np.ndarray, px: float) -> np.ndarray:
    """Round milia-like bright cysts and dark globules at random places inside the lesion."""
    centre, radius = _col(params, "centre"), _col(params, "radius")
    xy, size, kind = _col(params, "dots_xy"), _col(params, "dots_size"), _col(params, "dots_kind")
    amount, bright_share = _col(params, "dots"), _col(params, "bright_share")
    x, y = xs[0][None], ys[:, 0][None]  # (1, S) pixel-centre coordinates
    ink = np.zeros(colour.shape[:3], np.float32)  # > 0 bright cysts, < 0 dark globules
    for j in range(xy.shape[1]):
        r = np.sqrt(xy[:, j, 0]) * radius * 0.85
        cx = centre[:, 0] + r * np.cos(2 * np.pi * xy[:, j, 1])
        cy = centre[:, 1] + r * np.sin(2 * np.pi * xy[:, j, 1])
        rad = size[:, j] * radius
        sigma = np.maximum(rad, 0.7 * px)[:, None]
        amp = (amount * np.minimum(1.0, (rad / sigma[:, 0]) ** 2))[:, None, None]  # sub-pixel dots keep their ink
        # A Gaussian disc is separable: one outer product per dot.
        blob = np.exp(-(((y - cy[:, None]) / sigma) ** 2))[:, :, None] * np.exp(-(((x - cx[:, None]) / sigma) ** 2))[:, None, :]
        sign = np.where(kind[:, j] < bright_share, 1.0, -1.0).astype(np.float32)[:, None, None]
        ink += blob * (amp * sign)
    bright, dark = np.clip(ink, 0, 1), np.clip(-ink, 0, 1)
    colour = colour * (1 - 0.65 * dark)[..., None]
    return colour + bright[..., None] * (np.array([0.93, 0.89, 0.80], np.float32) - colour)


def _render(params: list[dict], size: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(params)
    px = 2.0 / size
    coords = (np.arange(size, dtype=np.float32) + 0.5) * px - 1
    ys, xs = np.meshgrid(coords, coords, indexing="ij")
    v = lambda a: a[:, None, None]  # noqa: E731  per-image scalar -> broadcastable (N, 1, 1)

    # Skin: tone, mottled texture, patchy redness, uneven lighting.
    skin = _col(params, "skin")[:, None, None, :]
    skin_tex = _fractal(params, "skin_grid", size)
    red = _smoothstep(0.45, 0.8, _fractal(params, "red_grid", size)) * v(_col(params, "red_amp"))
    skin = skin * (0.93 + 0.14 * skin_tex)[..., None]
    skin = skin + red[..., None] * np.array([0.05, -0.12, -0.10], np.float32)

    # Lesion shape: rotated, stretched polar outline with low (asymmetry) and high (irregularity)
    # harmonics, plus a fractal perturbation of the border.
    centre = _col(params, "centre")
    ang = v(_col(params, "angle"))
    dx, dy = xs[None] - v(centre[:, 0]), ys[None] - v(centre[:, 1])
    u = dx * np.cos(ang) + dy * np.sin(ang)
    w = -dx * np.sin(ang) + dy * np.cos(ang)
    elong = np.sqrt(v(_col(params, "elong")))
    u, w = u / elong, w * elong
    rho = np.sqrt(u * u + w * w) + 1e-6
    # The outline depends on the angle only: tabulate it at _ANGLES angles per image, look it up.
    amps, phases = _col(params, "harm_amp"), _col(params, "harm_phase")
    theta = np.arange(_ANGLES, dtype=np.float32) * np.float32(2 * np.pi / _ANGLES)
    k = np.arange(1, 11, dtype=np.float32)
    table = 1 + (amps[:, :, None] * np.cos(k[None, :, None] * theta + phases[:, :, None])).sum(1)  # (N, A)
    slot = (np.arctan2(w, u) * np.float32(_ANGLES / (2 * np.pi))).astype(np.int64) % _ANGLES
    outline = np.take_along_axis(table, slot.reshape(n, -1), 1).reshape(rho.shape)
    radius = v(_col(params, "radius"))
    border_noise = _fractal(params, "border_grid", size) - 0.5
    d = rho / (radius * np.maximum(outline, 0.3)) - 1 + 2 * border_noise * v(_col(params, "border"))
    mask = d < 0  # < 0 inside the lesion

    # Lesion colour: palette mixed by sharp (variegated) or flat (uniform) soft-max of fields.
    fields = np.stack([_fractal(params, "var_grids", size, i) for i in range(4)], -1)
    logits = (fields - fields.mean(-1, keepdims=True)) * _col(params, "var_sharp")[:, None, None, None]
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    colour = np.matmul(weights.reshape(n, -1, 4), _col(params, "palette")).reshape(n, size, size, 3)
    depth = _smoothstep(0.0, 0.7, -d)
    shade = 1 - v(_col(params, "centre_dark")) * depth
    # Pigment network: a honeycomb (sum of three plane waves 120 degrees apart: bright holes at its
    # maxima, dark connected lines along its minima) in noise-warped lesion coordinates, faded to
    # its mean where the cell size falls below ~3 px so low resolutions do not alias.
    warp = (_fractal(params, "warp_grid", size) - 0.5) * 0.5
    freq = v(_col(params, "net_freq"))
    pu, pw = np.pi * freq * (u + warp), np.pi * freq * (w - border_noise * 0.5)
    honey = np.cos(pu) + np.cos(-0.5 * pu + 0.866 * pw) + np.cos(-0.5 * pu - 0.866 * pw)  # in [-1.5, 3]
    lines = _smoothstep(-0.3, -1.0, honey)
    sharp = np.clip((size / freq - 2.0) / 3.0, 0, 1)
    lines = sharp * lines + (1 - sharp) * 0.4
    shade = shade * (1 - v(_col(params, "net")) * lines * (0.3 + 0.7 * depth))
    # Waxy cerebriform ridges, computed only for the images that have them (keratoses).
    ridged = np.flatnonzero(_col(params, "ridge") > 0)
    if len(ridged):
        sub = [params[i] for i in ridged]
        ridges = 1 - np.abs(np.sin(np.pi * 5 * _fractal(sub, "tex_grid", size)))
        shade[ridged] *= 1 - v(_col(sub, "ridge")) * ridges
    colour = colour * shade[..., None]
    colour = _dots(params, colour, xs, ys, px)
    soft = np.maximum(v(_col(params, "soft")), px) / radius
    alpha = (1 / (1 + np.exp(np.clip(d / soft, -30, 30)))) * v(_col(params, "opacity"))
    image = skin + alpha[..., None] * (colour - skin)

    for i, p in enumerate(params):
        if len(p["hairs"]):
            a = _hair_alpha(p["hairs"], xs, ys, px)[..., None]
            image[i] = image[i] + a * (_HAIR - image[i])

    # Dermoscope optics: directional light falloff and the dark circular vignette.
    light_dir = _col(params, "light_dir")
    light = 1 - v(_col(params, "light_amp")) * (1 + xs[None] * v(np.cos(light_dir)) + ys[None] * v(np.sin(light_dir)))
    vc = _col(params, "vig_centre")
    r = np.sqrt((xs[None] - v(vc[:, 0])) ** 2 + (ys[None] - v(vc[:, 1])) ** 2)
    vr = v(_col(params, "vig_radius"))
    vignette = 1 - _smoothstep(0, 1, (r - vr + 0.08) / 0.16) * v(_col(params, "vignette"))
    vignette = vignette * (1 - 0.25 * r**2)
    image = image * (light * vignette)[..., None]
    return image, mask


def generate_phantoms(
    n: int, size: int, seed: int = 0, *, balanced: bool = False, start: int = 0, chunk: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phantoms ``start .. start+n-1``: images uint8 (n, size, size, 3), masks uint8 0/1 (n, size, size),
    labels int64 (n,). ``balanced`` gives equal class frequencies instead of ISIC-2017 priors."""
    if size < 1 or size & (size - 1):
        raise ValueError(f"phantom size must be a power of two, got {size}")
    if n < 0 or seed < 0 or start < 0:
        raise ValueError(f"phantoms need n, seed, start >= 0, got n={n} seed={seed} start={start}")
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    labels = np.empty(n, np.int64)
    chunk = chunk or max(1, min(256, 2**20 // (size * size)))
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        params = [_draw(seed, start + i, balanced) for i in range(lo, hi)]
        image, mask = _render(params, size)
        # Fine sensor-like grain, drawn per image so it too depends only on (seed, index, size).
        grain = np.stack([np.random.default_rng([seed, start + i, size, 1]).normal(0, 0.012, (size, size, 1))
                          for i in range(lo, hi)])
        images[lo:hi] = np.rint(np.clip(image + grain, 0, 1) * 255)
        masks[lo:hi] = mask
        labels[lo:hi] = [p["label"] for p in params]
    return images, masks, labels


__all__ = ["generate_phantoms", "PRIORS", "GENERATOR_VERSION"]
