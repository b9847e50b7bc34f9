"""The models, one architecture per file (``bert.py``: BERT/RoBERTa/ALBERT-style encoders and
their task heads; ``gpt.py``: the GPT decoder). Models see tensors only: text stays outside."""
