"""lesion-models."""
