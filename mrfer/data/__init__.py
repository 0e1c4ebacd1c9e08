"""Data layer: dataset readers, faces, synthetic data, degradation, splits and the data stages."""
