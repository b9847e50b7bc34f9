"""Datasets: preparation of the packaged real data, and collators for training."""
