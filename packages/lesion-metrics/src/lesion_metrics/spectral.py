"""Spectral artifact score: the power spectrum of generated against real images.

Each image is taken in grey levels (ITU-R BT.601 luma, 0-255) and its power spectrum normalised as
``|DFT|^2 / (H W)^2``, so that the spectrum sums to the mean squared grey level (Parseval): a pattern
of amplitude ``a`` grey levels adds ``a^2`` of power. Reported:

- ``checkerboard_excess``: the power of generated images at the checkerboard frequencies minus that of
  real images (mean per image, grey levels squared). The checkerboard frequencies are those of
  patterns with a period of 2 and 4 px, which strided transposed convolutions and nearest upsampling
  leave behind: every (ky, kx) with ky in {0, H/4, H/2, 3H/4} and kx in {0, W/4, W/2, 3W/4} except
  the mean (0, 0) -- the Nyquist and half-Nyquist bins. A +-a grey-level checkerboard overlay adds
  exactly a^2 (when the clean images have no power of their own there).
- ``checkerboard_excess_db``: the same as a ratio, 10 log10(generated / real); 0 dB for equal spectra.
- ``spectrum_distance_db``: the mean over radial frequencies of |10 log10(generated / real)| of the
  azimuthally averaged spectra (a broad-band mismatch: blur, noise).
The azimuthally averaged spectra themselves go to the report as curves.
"""

from __future__ import annotations

import numpy as np
import torch

from lesion_metrics.bootstrap import percentile_interval, resample_counts, resample_rng
from lesion_metrics.registry import ImageSource, MetricOptions, register_metric, require_images

LUMA = (0.299, 0.587, 0.114)


def checkerboard_mask(height: int, width: int) -> torch.Tensor:
    """True at the period-2 and period-4 frequencies of an (H, W) DFT, the mean excluded."""
    if height % 4 or width % 4:
        raise ValueError(f"spectral: image sides must be multiples of 4 (periods 2 and 4 px), got {height}x{width}")
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[::height // 4, ::width // 4] = True
    mask[0, 0] = False
    return mask


def radial_index(height: int, width: int) -> torch.Tensor:
    """Radial frequency bin of every DFT coefficient: round(|k|) in cycles per image of the shorter side."""
    ky = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    kx = torch.fft.fftfreq(width, dtype=torch.float64)[None, :]
    return (torch.sqrt(ky**2 + kx**2) * min(height, width)).round().long()


def power_spectra(source: ImageSource) -> tuple[torch.Tensor, np.ndarray]:
    """The mean power spectrum (H, W) of a source and each image's power at the checkerboard frequencies."""
    total, energies, mask = None, [], None
    luma = torch.tensor(LUMA, dtype=torch.float64).view(1, 3, 1, 1)
    for batch in source.iterate():
        grey = (batch.double() * luma).sum(dim=1)
        height, width = grey.shape[1:]
        power = torch.fft.fft2(grey).abs().square() / (height * width) ** 2
        mask = checkerboard_mask(height, width) if mask is None else mask
        energies.append(power[:, mask].sum(dim=1).numpy())
        total = power.sum(dim=0) if total is None else total + power.sum(dim=0)
    return total / source.num_images, np.concatenate(energies)


def radial_profile(power: torch.Tensor) -> np.ndarray:
    """Azimuthal average from radial bin 1 (the lowest non-zero frequency) to Nyquist."""
    index = radial_index(*power.shape)
    nyquist = min(power.shape) // 2
    sums = torch.zeros(int(index.max()) + 1, dtype=torch.float64).index_add_(0, index.flatten(), power.flatten())
    counts = torch.bincount(index.flatten()).double()
    return (sums / counts)[1:nyquist + 1].numpy()


def _db(generated, real):
    with np.errstate(divide="ignore"):  # no power at all on the real side: +inf dB
        return 10 * np.log10(np.asarray(generated) / real)


@register_metric("spectral")
def spectral(opts: MetricOptions) -> dict[str, float]:
    for side in (opts.real, opts.fake):
        require_images("spectral", side, 1)
    real_power, real_energy = power_spectra(opts.real)
    fake_power, fake_energy = power_spectra(opts.fake)
    if real_power.shape != fake_power.shape:
        raise ValueError(f"spectral: real images are {tuple(real_power.shape)} px but generated ones {tuple(fake_power.shape)}")
    real_profile, fake_profile = radial_profile(real_power), radial_profile(fake_power)
    size = min(real_power.shape)
    opts.artifacts["spectrum"] = {"frequency": [k / size for k in range(1, len(real_profile) + 1)],
                                  "real": real_profile.tolist(), "generated": fake_profile.tolist()}
    if opts.bootstrap:
        rng = resample_rng(opts.seed, "spectral")
        real_means = resample_counts(len(real_energy), opts.bootstrap, rng) @ real_energy / len(real_energy)
        fake_means = resample_counts(len(fake_energy), opts.bootstrap, rng) @ fake_energy / len(fake_energy)
        opts.interval("checkerboard_excess", *percentile_interval(fake_means - real_means))
        opts.interval("checkerboard_excess_db", *percentile_interval(_db(fake_means, real_means)))
    return {"checkerboard_excess": fake_energy.mean() - real_energy.mean(),
            "checkerboard_excess_db": float(_db(fake_energy.mean(), real_energy.mean())),
            "spectrum_distance_db": float(np.abs(_db(fake_profile, real_profile)).mean())}
