"""Text outside the models: tokenizers (train, load, special ids, decode; ``tokenizer.py``) and
sentence splitting for Chinese and English (``sentences.py``)."""
