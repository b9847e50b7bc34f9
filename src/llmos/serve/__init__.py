"""The HTTP server (``llmos serve``): the app factory and lifespan (``app.py``), settings from
flags and ``LLMOS_*`` variables (``settings.py``), model discovery (``catalog.py``), the registry
that loads and unloads within a memory budget (``registry.py``), typed batch operations
(``operations.py``) run by one micro-batching queue per model (``batcher.py``, which knows
nothing of HTTP), shared FastAPI dependencies (``deps.py``), routes per domain (``routes/``),
metrics, and the static web console (``static/``).
"""
