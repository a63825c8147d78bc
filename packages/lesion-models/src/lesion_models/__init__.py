"""lesion-models: networks for dermoscopy synthesis, each with a config dataclass and
save_pretrained/from_pretrained. Importing the package registers every model family, so
``load_pretrained(dir)`` can rebuild any saved model."""

from lesion_models import pggan  # noqa: F401  (registers the PGGAN networks)
from lesion_models.hub import Pretrained, PretrainedLoadError, load_pretrained, register
from lesion_models import classifier  # noqa: F401  (registers LesionClassifier; torchvision stays lazy)

from lesion_models import pix2pixhd  # noqa: F401  (registers Pix2PixHDGenerator, MultiscaleDiscriminator)
from lesion_models import pix2pix  # noqa: F401  (registers UNetGenerator)
from lesion_models import spade  # noqa: F401  (registers SPADEGenerator)
from lesion_models import unet  # noqa: F401  (registers UNetSegmenter)
from lesion_models import dcgan  # noqa: F401  (registers DCGANGenerator, DCGANDiscriminator)
from lesion_models import lapgan  # noqa: F401  (registers LAPGANGenerator, LAPGANDiscriminator)

__all__ = ["Pretrained", "PretrainedLoadError", "load_pretrained", "register"]
