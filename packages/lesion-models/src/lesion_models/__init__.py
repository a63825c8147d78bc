"""lesion-models: networks for dermoscopy synthesis, each with a config dataclass and
save_pretrained/from_pretrained. Importing the package registers every model family, so
``load_pretrained(dir)`` can rebuild any saved model."""

from lesion_models import (
    classifier,  # noqa: F401  (registers LesionClassifier; torchvision stays lazy)
    dcgan,  # noqa: F401  (registers DCGANGenerator, DCGANDiscriminator)
    lapgan,  # noqa: F401  (registers LAPGANGenerator, LAPGANDiscriminator)
    pggan,  # noqa: F401  (registers the PGGAN networks)
    pix2pix,  # noqa: F401  (registers UNetGenerator)
    pix2pixhd,  # noqa: F401  (registers Pix2PixHDGenerator, MultiscaleDiscriminator)
    spade,  # noqa: F401  (registers SPADEGenerator)
    unet,  # noqa: F401  (registers UNetSegmenter)
)
from lesion_models.hub import Pretrained, PretrainedLoadError, load_pretrained, register

__all__ = ["Pretrained", "PretrainedLoadError", "load_pretrained", "register"]
