"""Text outside the models: tokenizers, corpus readers, sentence splitting."""
