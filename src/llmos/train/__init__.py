"""Training: the one loop (``loop.py``: DDP, AMP, accumulation, checkpoints, exact resume), the
optimizer and schedule, what a run does around the loop (``runs.py``), one module per task
family (``tasks/``) and the evaluation metrics (``metrics.py``)."""
