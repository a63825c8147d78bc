"""lesion-train."""
