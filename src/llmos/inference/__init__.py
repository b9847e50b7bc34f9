"""Inference: text in, results out, over a loaded checkpoint (the model never sees text).

``load.py`` builds the pipeline of a checkpoint's kind from its typed
:class:`~llmos.checkpoint.io.Checkpoint`: :class:`~.encoder.EncoderPipeline` (``classify.py``,
``tag.py``, fill-mask, ``embed.py``) or :class:`~.generator.GeneratorPipeline` (``generate.py``:
greedy, sampling and beam search over the key/value cache; ``stream.py``: incremental text).
``onnx.py`` runs an ONNX export with ONNX Runtime; ``onnx_export.py`` writes one.
``zeroshot.py`` classifies from label descriptions or a few examples over an encoder's vectors.
"""
