"""Checkpoints: the llmos checkpoint directory read and written (``io.py``), the weights digest
that identifies one (``digest.py``), and Hugging Face <-> llmos conversion (``hf.py``, the only
module that imports ``transformers``)."""
