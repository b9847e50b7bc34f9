"""Data: the packaged real datasets (sources, preparation), where a named dataset, corpus or
tokenizer lives (``datasets.py``), readers of labelled files, tokenized corpora, and the
collators and batch streams of each training objective (MLM, causal LM, tagging)."""
