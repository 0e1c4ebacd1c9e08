"""mrfer: multi-resolution facial expression recognition, orchestrated by DVC."""
__version__ = "0.1.0"
