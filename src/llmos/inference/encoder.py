"""The encoder pipeline: classify, tag, fill-mask, correct spelling and embed with a BERT-style
checkpoint (or its ONNX export).

Which of them a checkpoint answers depends on what it was trained for (its
:data:`~llmos.checkpoint.task.TaskSpec`): ``classify`` needs a classifier, ``tag`` a tagger,
``fill_mask`` a pretrained encoder with its masked-LM head, ``correct`` a spelling model; every
encoder embeds. Asking for another says what the checkpoint is.

Each method checks and dispatches; the operations' own logic lives in
:mod:`llmos.inference.classify`, :mod:`~llmos.inference.speller`, :mod:`~llmos.inference.cloze`
and :mod:`~llmos.inference.embed`. One class answers every encoder task, hence past 500 lines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from llmos.checkpoint.io import Checkpoint
from llmos.checkpoint.task import (
    Classification,
    Embedding,
    MaskedLM,
    MultiTask,
    Spelling,
    Tagging,
)
from llmos.data.batching import pad_batch, run_length_sorted
from llmos.errors import LlmosError
from llmos.inference import cloze
from llmos.inference import correct as csc
from llmos.inference.classify import (
    batched_logits,
    check_long_inputs,
    encode_texts,
    encode_windows,
    label_result,
    mean_over_windows,
)
from llmos.inference.embed import POOLINGS, embed_ids
from llmos.inference.onnx import OnnxModel
from llmos.inference.pipeline import Pipeline
from llmos.inference.speller import Speller
from llmos.inference.tag import (
    SpanDecoder,
    crf_decode,
    pad_units,
    predict_spans,
    tokenize_for_tagging,
)
from llmos.models.multitask import HeadView
from llmos.models.xlnet import EncoderView, XLNetLMHeadModel
from llmos.text.tokenizer import decode

log = logging.getLogger("llmos.inference")


EMBED_KINDS = ("query", "passage")


def with_prefix(spec: Embedding, texts: list[str], kind: str | None) -> list[str]:
    """``texts`` with the spec's prefix for ``kind`` (``query`` / ``passage``) put before each;
    unchanged for ``kind`` None or a spec without that prefix."""
    if kind is None:
        return texts
    if kind not in EMBED_KINDS:
        raise LlmosError(f"kind must be one of {list(EMBED_KINDS)} (or none), got {kind!r}")
    prefix = spec.query_prefix if kind == "query" else spec.passage_prefix
    return [prefix + t for t in texts] if prefix else texts


class EncoderPipeline(Pipeline):
    """A BERT-style checkpoint ready for inference (see :func:`llmos.load`)."""

    operations: ClassVar[tuple[str, ...]] = ("classify", "tag", "fill_mask", "embed", "correct")
    needs: ClassVar[str] = "a GPT checkpoint"

    def __init__(self, model: torch.nn.Module, checkpoint: Checkpoint) -> None:
        super().__init__(model, checkpoint)
        spec = checkpoint.task
        # Tagging models: tag sequences -> spans under the checkpoint's labels and scheme.
        self.decoder = (
            SpanDecoder(list(spec.labels), spec.scheme) if isinstance(spec, Tagging) else None
        )
        self._speller: Speller | None = None  # a spelling model's decoding, built once

    def _pad(self) -> int:
        return self._ids["pad"] or 0

    def _encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text).ids
        if len(ids) > self.config.max_position:
            raise LlmosError(
                f"input is {len(ids)} tokens; this model takes at most {self.config.max_position}"
            )
        return ids

    def require_task(self, kind: str) -> list[str]:
        """The labels of a ``kind`` (classification, tagging) model; a clear error for any
        other model."""
        spec = self.spec
        if isinstance(spec, MultiTask):
            raise LlmosError(
                f"this checkpoint is a multitask model (heads: {', '.join(spec.heads)}): pick "
                f"a head with .head(name), or read them all in one pass with .analyze()"
            )
        if spec.kind != kind or not isinstance(spec, Classification | Tagging):
            have = "pretraining (fill-mask)" if isinstance(spec, MaskedLM) else spec.kind
            raise LlmosError(f"this checkpoint is a {have} model, not a {kind} model")
        return list(spec.labels)

    def head(self, name: str) -> EncoderPipeline:
        """One head of a multitask checkpoint as a pipeline of its own (``classify`` for a
        classifier head, ``tag`` for a tagger), sharing this one's model and tokenizer."""
        spec = self.spec
        if not isinstance(spec, MultiTask):
            raise LlmosError(f"this checkpoint is {self.describe()}, not a multitask model")
        if name not in spec.heads:
            raise LlmosError(f"no head {name!r}; this model's heads: {', '.join(spec.heads)}")
        ckpt = Checkpoint(self.checkpoint.path, self.checkpoint.config, spec.heads[name])
        vars(ckpt)["tokenizer"] = self.tokenizer  # the cached_property's slot: no re-read
        return EncoderPipeline(HeadView(self.model, name), ckpt)

    @torch.inference_mode()
    def analyze(
        self, texts: list[str] | str, batch_size: int = 32
    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Every head of a multitask checkpoint on each text, from one encoder pass.

        Returns:
            Per text, ``{head: result}``: a classifier head's ``{"label", "score",
            "scores"}`` (as :meth:`classify`), a tagger head's spans (as :meth:`tag`); and the
            texts' sentence vectors (the mean of the last layer, L2-normalized; float32
            (N, C)), the same vectors :meth:`embed` gives. A text longer than the model's
            ``max_length`` tokens is read in several passes (each head's own windowing).
        """
        spec = self.spec
        if not isinstance(spec, MultiTask):
            raise LlmosError(
                f"this checkpoint is {self.describe()}: analyze needs a multitask model"
            )
        if isinstance(texts, str):
            texts = [texts]
        # Character heads (char_tags) tag the characters of the pieces every head reads.
        chars = any(isinstance(h, Tagging) and h.char_tags for h in spec.heads.values())
        tokens = tokenize_for_tagging(self.tokenizer, texts, chars)
        size = self.checkpoint.max_length - 2
        short = [i for i, t in enumerate(tokens) if len(t.ids) <= size]
        cls_id, sep_id = self._ids["cls"] or 0, self._ids["sep"] or 0
        inputs = [np.concatenate([[cls_id], tokens[i].ids, [sep_id]]) for i in short]
        units = [u.rows(0, len(u.piece), 0) for i in short if (u := tokens[i].units) is not None]

        def pad(idx: np.ndarray) -> dict[str, torch.Tensor | None]:
            b = pad_batch([inputs[j] for j in idx], None, self._pad())
            if units:
                b["units"] = pad_units([units[j] for j in idx])  # type: ignore[assignment]
            return b

        def forward(b: dict[str, torch.Tensor | None]) -> list[dict[str, np.ndarray]]:
            mask = b["attention_mask"]
            mask = mask.to(self.device) if mask is not None else None
            u = b.get("units")
            out = self.model(
                b["input_ids"].to(self.device),
                None,
                mask,
                units=u.to(self.device) if u is not None else None,
            )
            out["pooled"] = torch.nn.functional.normalize(out["pooled"].float(), dim=-1)
            rows = {k: v.float().cpu().numpy() for k, v in out.items()}
            return [{k: v[r] for k, v in rows.items()} for r in range(len(b["input_ids"]))]

        rows = run_length_sorted(inputs, batch_size, pad, forward) if inputs else []
        results: list[dict[str, Any]] = [{} for _ in texts]
        vectors = np.zeros((len(texts), self.config.hidden_size), dtype=np.float32)
        for i, row in zip(short, rows, strict=True):
            vectors[i] = row["pooled"]
        for name, head in spec.heads.items():
            if isinstance(head, Classification):
                labels, t = list(head.labels), head.temperature or 1.0
                for i, row in zip(short, rows, strict=True):
                    p = (torch.from_numpy(row[name]) / t).softmax(-1).tolist()
                    results[i][name] = label_result(labels, p)
                continue
            decoder = SpanDecoder(list(head.labels), head.scheme)
            if head.char_tags:  # one row per character, no specials
                n = [len(tokens[i].offsets) for i in short]
                logits = [row[name][:k] for row, k in zip(rows, n, strict=True)]
            else:
                n = [len(tokens[i].ids) for i in short]
                logits = [row[name][1 : k + 1] for row, k in zip(rows, n, strict=True)]
            crf = HeadView(self.model, name).crf
            if crf is not None:
                scores, paths = crf_decode(crf, logits, batch_size)
            else:
                scores = [torch.from_numpy(x).log_softmax(-1).numpy() for x in logits]
                paths = [None] * len(scores)
            for i, sc, path in zip(short, scores, paths, strict=True):
                results[i][name] = decoder.spans(texts[i], tokens[i], sc, path)[1]
        read = set(short)
        long = [i for i in range(len(texts)) if i not in read]
        if long:  # several passes: each head reads them in its own windows
            more = [texts[i] for i in long]
            for name, head in spec.heads.items():
                pipe = self.head(name)
                got = pipe.classify(more) if isinstance(head, Classification) else pipe.tag(more)
                for i, r in zip(long, got, strict=True):
                    results[i][name] = r
            vectors[long] = self.embed(more)
        return results, vectors

    @property
    def has_mlm_head(self) -> bool:
        """Whether the masked-LM head is there to read (``fill_mask``, ``mask_scores``): a
        pretrained BERT, or an embedding encoder that was given one (``llmos pretrain`` with
        ``init``, e.g. configs/pretrain/e5-zh-mlm.yaml), run in PyTorch."""
        return (
            isinstance(self.spec, MaskedLM | Embedding)
            and self.config.heads != "none"
            and not isinstance(self.model, OnnxModel)
            and self._ids.get("mask") is not None
        )

    def _require_mlm_head(self) -> int:
        """The mask token's id, once the checkpoint is known to have a masked-LM head."""
        if not isinstance(self.spec, MaskedLM | Embedding):
            raise LlmosError(
                f"this checkpoint is a {self.spec.kind} model; fill-mask needs a pretrained BERT "
                "(MLM) checkpoint"
            )
        if getattr(self.config, "heads", "mlm") == "none" or isinstance(self.model, OnnxModel):
            raise LlmosError(
                "this encoder has no masked-LM head (an embedding model): use embed(), or a "
                "checkpoint pretrained with MLM for fill-mask (give an embedding encoder one "
                "with `llmos pretrain --config configs/pretrain/e5-zh-mlm.yaml`)"
            )
        mask_id = self._ids.get("mask")
        if mask_id is None:
            raise LlmosError("this checkpoint's tokenizer has no [MASK] token")
        return mask_id

    @property
    def mask_token(self) -> str:
        """The tokenizer's mask token as text (``[MASK]``, ``<mask>``)."""
        return self.tokenizer.id_to_token(self._require_mlm_head())

    def word_piece(self, word: str) -> int | None:
        """The id of the one piece ``word`` is read as, or None when it takes several
        (:func:`~llmos.inference.cloze.word_piece`)."""
        return cloze.word_piece(self.tokenizer, word)

    def mask_scores(
        self, texts: list[str], token_ids: Sequence[int], batch_size: int = 32
    ) -> np.ndarray:
        """The masked-LM head's log-probabilities of ``token_ids`` at the one mask token of
        each text (cloze prompts: :mod:`llmos.inference.cloze`).

        Returns:
            A float32 array (number of texts, number of token ids), log-probabilities over
            the whole vocabulary. A text longer than ``max_length`` keeps the tokens around its
            mask (with a warning).
        """
        mask_id = self._require_mlm_head()
        max_length = self.checkpoint.max_length
        inputs, positions, cut = cloze.encode_cloze(self.tokenizer, texts, mask_id, max_length)
        if cut:
            log.warning("%d of %d texts were cut to %d tokens", cut, len(texts), max_length)
        return cloze.mask_log_probs(
            self.model, inputs, positions, token_ids, self._pad(), batch_size
        )

    @torch.inference_mode()
    def fill_mask(
        self, text: str, top_k: int = 5
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Predict the tokens hidden behind ``[MASK]`` (``[MASK]`` stands for the tokenizer's
        own mask token, ``<mask>`` for multilingual-e5; a SentencePiece tokenizer's bare
        ``▁`` pieces around it are dropped, as in :mod:`llmos.inference.cloze`).

        Returns:
            For one mask, ``[{"token", "token_id", "score", "sequence"}, ...]`` best first; for
            several masks, one such list per mask, left to right.
        """
        mask_id = self._require_mlm_head()
        if top_k < 1:
            raise LlmosError(f"top_k must be >= 1, got {top_k}")
        text = text.replace(cloze.MASK_SLOT, self.tokenizer.id_to_token(mask_id))
        blank = self.tokenizer.token_to_id(cloze.BLANK_PIECE)
        ids = cloze.drop_blanks(self._encode(text), mask_id, blank)
        where = [i for i, t in enumerate(ids) if t == mask_id]
        if not where:
            raise LlmosError(f"no [MASK] token in the input {text!r}")
        x = torch.tensor([ids], device=self.device)
        positions = torch.tensor(where, device=self.device)
        if isinstance(self.model, XLNetLMHeadModel):  # the query stream at the blanks
            logits = self.model.predict_positions(x, positions)[0].float()  # (M, V)
        else:
            logits = self.model(x, mlm_positions=positions).mlm_logits.float()  # (M, V)
        probs = logits.softmax(-1)
        scores, tokens = probs.topk(min(top_k, probs.size(-1)), dim=-1)
        results = []
        for m, pos in enumerate(where):
            row = []
            for score, tok in zip(scores[m].tolist(), tokens[m].tolist(), strict=True):
                filled = list(ids)
                filled[pos] = tok
                row.append(
                    {
                        "token": decode(self.tokenizer, [tok]),
                        "token_id": tok,
                        "score": score,
                        "sequence": decode(self.tokenizer, filled),
                    }
                )
            results.append(row)
        return results[0] if len(results) == 1 else results

    def classify(
        self,
        texts: list[str],
        texts_b: list[str] | None = None,
        batch_size: int = 32,
        long_inputs: str = "window",
    ) -> list[dict[str, Any]]:
        """Classify texts (or sentence pairs with ``texts_b``).

        Args:
            texts: the texts (or the first texts of pairs).
            texts_b: the second texts of sentence pairs, one per text.
            batch_size: rows per forward pass (texts, or windows of long texts).
            long_inputs: what happens to a text longer than the checkpoint's ``max_length``
                tokens. ``"window"`` (the default): it is read in windows that overlap by half
                (each wrapped in the tokenizer's own special tokens) and its logits are the
                mean of the windows' logits (see
                :func:`~llmos.inference.classify.mean_over_windows`). ``"truncate"``: only its
                first ``max_length`` tokens are read, with a warning. Sentence pairs are always
                truncated (longest first), as the model was trained on them: a window of the
                second text alone would not be the pair the model learned to judge.

        A classifier calibrated by ``llmos calibrate`` divides its logits by the
        ``temperature`` task.json records before the softmax: the label is the same, the
        probabilities are the calibrated ones.

        A classifier fine-tuned with a ``text_prefix`` (task.json) reads ``prefix + text``
        for every text (the first of a pair), as in training; in the window path the prefix
        begins every window. The answers are about the texts as given.

        Returns:
            ``[{"label", "score", "scores": {label: probability}, "windows"}, ...]`` in input
            order; ``windows`` is how many windows the text was read in (1 unless it was
            longer than ``max_length`` and windowed).
        """
        labels = self.require_task("classification")
        check_long_inputs(long_inputs)
        if isinstance(texts, str):
            texts = [texts]
        max_length = self.checkpoint.max_length
        prefix = self.spec.text_prefix if isinstance(self.spec, Classification) else None
        pairs = texts_b is not None and any(b is not None for b in texts_b)
        if long_inputs == "window" and not pairs:
            inputs = encode_windows(self.tokenizer, texts, max_length, prefix)
            ids, types, windows = inputs.ids, inputs.types, inputs.windows
            truncated = inputs.fallback
        else:
            ids, types, truncated = encode_texts(self.tokenizer, texts, texts_b, max_length, prefix)
            windows = [1] * len(texts)
        if truncated:
            log.warning(
                "%d of %d inputs were truncated to %d tokens", truncated, len(texts), max_length
            )
        logits = batched_logits(self.model, ids, types, self._pad(), batch_size)
        t = self.spec.temperature if isinstance(self.spec, Classification) else None
        probs = (mean_over_windows(logits, windows) / (t or 1.0)).softmax(-1)
        return [
            {**label_result(labels, row), "windows": n}
            for row, n in zip(probs.tolist(), windows, strict=True)
        ]

    def tag(self, texts: list[str] | str, batch_size: int = 32) -> list[list[dict[str, Any]]]:
        """Label spans in texts (entities, slots, words, words with their POS).

        Texts of any length: long ones are read in overlapping windows and decoded as a whole
        (constrained Viterbi), so every tag sequence is valid under the model's scheme.

        Returns:
            One list per text of ``{"text", "label", "start", "end", "score"}`` spans, with
            character offsets into that text (``text[start:end]``); for word segmentation the
            label is ``""``.
        """
        self.require_task("tagging")
        assert self.decoder is not None
        if isinstance(texts, str):
            texts = [texts]
        char_units = isinstance(self.spec, Tagging) and self.spec.char_tags
        tokens = tokenize_for_tagging(self.tokenizer, texts, char_units)
        return predict_spans(
            self.model,
            tokens,
            texts,
            self.decoder,
            self._ids,
            self.checkpoint.max_length,
            batch_size,
        )[2]

    def correct(
        self,
        texts: list[str] | str,
        *,
        threshold: float | None = None,
        candidates: Callable[[str], Sequence[str]] | str | None = "model",
        batch_size: int = 32,
        lm: bool = True,
    ) -> list[list[csc.Correction]]:
        """The spelling corrections a spelling checkpoint makes in each text.

        A checkpoint fitted with a character n-gram LM (``lm`` in its task.json, ``llmos
        write lm``) decodes with it by default: the LM's gains over the confusion sets plus
        the model's evidence (:mod:`llmos.inference.csc_lm`). ``lm=False``, an explicit
        ``threshold`` or ``candidates`` other than ``"model"`` decode with the model alone:
        ``threshold`` (default: the checkpoint's, fitted on its validation split) is the
        detection probability from which a character is flagged. ``candidates`` restricts
        what a character may become: ``"model"`` (default) the confusion sets the checkpoint
        was evaluated with (its ``confusion/`` directory: same pinyin, similar shape), if it
        has one; a function of the character (e.g.
        :meth:`llmos.data.spelling.ConfusionSet.candidates`); None any character the model
        knows. A model trained with ``mask_correct`` reads flagged characters a second time,
        masked (:func:`~llmos.inference.correct.predict_corrections`). Texts of any length:
        long ones are read in consecutive windows.

        Returns:
            One list per text of :class:`~llmos.inference.correct.Correction` (character
            offset, original, suggestion, detection and correction probabilities), by offset.
        """
        return self.speller().correct(texts, threshold, candidates, batch_size, lm)

    def speller(self) -> Speller:
        """A spelling checkpoint's decoder (built once): :meth:`correct` goes through it, and
        ``llmos write lm`` reads its evidence and candidates."""
        spec = self.spec
        if not isinstance(spec, Spelling):
            raise LlmosError(f"this checkpoint is {self.describe()}, not a spelling model")
        if self._speller is None:
            path, max_length = self.checkpoint.path, self.checkpoint.max_length
            self._speller = Speller(self.model, self.tokenizer, path, spec, self._ids, max_length)
        return self._speller

    def count_tokens(self, texts: list[str], kind: str | None = None) -> list[int]:
        """How many tokens :meth:`embed` reads of each text (its ``kind`` prefix and the special
        tokens included, after truncation to ``max_length``)."""
        own = self.spec if isinstance(self.spec, Embedding) else Embedding()
        prefixed = with_prefix(own, texts, kind)
        ids, _, _ = encode_texts(self.tokenizer, prefixed, None, self.checkpoint.max_length)
        return [len(row) for row in ids]

    def embed(
        self,
        texts: list[str] | str,
        *,
        pooling: str | None = None,
        normalize: bool | None = None,
        kind: str | None = None,
        batch_size: int = 32,
    ) -> np.ndarray:
        """Sentence embeddings from the encoder's last layer.

        ``pooling`` (``mean``, ``cls``, ``max``) and ``normalize`` (unit L2 length) default to
        the checkpoint's ``task.json`` (an imported sentence-transformers model records its
        own), else mean pooling, normalized. ``kind`` (``query`` or ``passage``) puts the
        checkpoint's prefix for that kind before every text, as asymmetric retrieval models
        expect (multilingual-e5-small: ``query: `` for searches, ``passage: `` for the
        documents searched); a checkpoint without prefixes embeds both kinds alike. Texts
        longer than the model's ``max_length`` are truncated, with a warning.

        Returns:
            A float32 numpy array (number of texts, hidden size).
        """
        if isinstance(texts, str):
            texts = [texts]
        own = self.spec if isinstance(self.spec, Embedding) else Embedding()
        pooling = pooling or own.pooling
        if pooling not in POOLINGS:
            raise LlmosError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        normalize = own.normalize if normalize is None else bool(normalize)
        texts = with_prefix(own, texts, kind)
        max_length = self.checkpoint.max_length
        ids, types, truncated = encode_texts(self.tokenizer, texts, None, max_length)
        if truncated:
            log.warning(
                "%d of %d texts were truncated to %d tokens", truncated, len(texts), max_length
            )
        if isinstance(self.model, OnnxModel):  # the graph pools and normalizes as task.json says
            if (pooling, normalize) != (own.pooling, own.normalize):
                raise LlmosError(
                    "this ONNX model pools and normalizes as its task.json says; other pooling "
                    "or normalize options need the PyTorch checkpoint"
                )
            return batched_logits(self.model, ids, types, self._pad(), batch_size).numpy()
        encoder = getattr(self.model, "bert", None) or EncoderView(self.model.transformer)
        return embed_ids(encoder, ids, types, self._pad(), pooling, normalize, batch_size)
