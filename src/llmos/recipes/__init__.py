"""Recipes: the entry points the CLI calls, each thin wiring (config in -> components built ->
``fit()`` or the work -> save -> a typed result with ``format_report()``). The library they wire
lives in lower layers (``train.tasks``, ``data``, ``checkpoint``, ...); no recipe imports
another, except ``defaults.py``, the pipeline that runs them to build the default models."""
