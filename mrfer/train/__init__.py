"""Training recipes, one module per stage (base, multires, kfold, fsr, video), on the shared
classification loop (loop.py) with its in-memory loader (loader.py) and loss (losses.py)."""
