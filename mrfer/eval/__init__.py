"""Evaluation: the test table (classify), its classifiers, and the k-fold aggregate."""
