"""Model compression: make a trained model smaller and faster (``prune``: structured pruning)."""
