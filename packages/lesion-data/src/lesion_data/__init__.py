"""lesion-data."""
