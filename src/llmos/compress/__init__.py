"""Model compression as library code: pruning (:mod:`.prune`: importance and head/neuron
surgery; :mod:`.prune_task`: a fine-tuned checkpoint's data, loss, evaluation and recovery),
quantization (:mod:`.quantize`: int8 modules, smoothing, sensitivity; :mod:`.quantize_eval`:
what a quantization costs and saves), vocabulary trimming (:mod:`.trim_vocab`: the pieces a
corpus uses, tokenizer.json renumbered, embedding rows sliced), distillation losses
(:mod:`.distill`; the distillation tasks are in :mod:`llmos.train.tasks.distill`) and the one
timing helper every "x times faster" report uses (:mod:`.timing`). The ``llmos compress``
recipes wire these together."""
