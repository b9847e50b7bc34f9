"""Model compression: knowledge distillation (the recipe in ``llmos.recipes.distill``)."""
