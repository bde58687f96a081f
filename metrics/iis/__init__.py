"""Packaged copy of the evaluate module (metrics/iis/) so `iis-hf install-metric` works from a wheel."""
