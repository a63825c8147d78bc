"""lesion-metrics."""
