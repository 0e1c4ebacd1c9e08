"""Training: one loop (loop.py), on-device presets (presets.py), checkpoints, and the two
training stages' recipes (base.py, multires.py)."""
