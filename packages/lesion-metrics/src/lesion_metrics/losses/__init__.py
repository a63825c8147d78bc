"""Training losses, one file per family: ``adversarial`` (WGAN-GP with drift and AC-GAN term,
non-saturating logistic with R1) and ``translation`` (mask-to-image). Import the module you need,
e.g. ``from lesion_metrics.losses import adversarial``."""
