"""lesion-data: dermoscopy datasets (readers, phantoms, prepared stores, label maps, augmentation)."""

# ISIC-2017 order; index k is the label and lesion class 1+k in label maps.
CLASS_NAMES = ("nevus", "melanoma", "seborrheic_keratosis")

__all__ = ["CLASS_NAMES"]
