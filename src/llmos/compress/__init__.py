"""Model compression: quantization, pruning, parameter sharing (distillation is a recipe)."""
