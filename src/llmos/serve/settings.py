"""Server settings: where the models are, where it listens, how requests are batched and limited.

One dataclass, filled from the ``llmos serve`` flags and ``LLMOS_*`` environment variables (or
directly in tests); every limit a client can hit is here, with the default a single-machine
deployment wants. The flags are generated from the fields (``llmos.cli.serve``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmos.errors import ConfigError


@dataclass
class ServeSettings:
    """What ``llmos serve`` runs with.

    Attributes:
        models_dir: every checkpoint under it (up to three levels deep) is served, named by its
            path relative to it (``runs/sentiment-zh/checkpoint`` -> ``sentiment-zh``); vector
            indexes (``llmos index build``) under it are searchable.
        host: the address to listen on.
        port: the port to listen on.
        database_url: the store's SQLAlchemy URL (default: ``$LLMOS_DATABASE_URL``, else the
            SQLite file).
        memory_budget_mb: models are loaded on first use; loading past this budget unloads the
            least recently used ones first.
        max_batch: texts per forward pass that the micro-batcher gathers (1 = batching off).
        max_wait_ms: how long the first request of a batch waits for others to join.
        queue_size: requests waiting per model; beyond it the server answers 429.
        request_timeout_s: a request still queued after this long is answered 504 (clients can
            ask for less with the ``X-Request-Timeout`` header, in seconds).
        rate_limit: requests per second per API key (a token bucket of ``rate_burst``);
            0 turns it off.
        rate_burst: requests a key may send at once (the size of its token bucket).
        auth_cache_s: how long an authenticated API key is remembered (the store is asked
            again after it; a key revoked meanwhile by another process works until then);
            0 asks the store on every request.
        max_body_bytes: larger request bodies are refused with 413.
        max_texts: texts per request.
        max_chars: characters per text (prompts included).
        max_new_tokens: the most tokens one generate request may ask for.
        max_images: images per request (``/v1/embed``, ``/v1/classify``,
            ``/v1/images/describe``); more is refused with 422.
        max_image_bytes: bytes per image file (decoded from base64, or uploaded); a larger
            one is refused with 413.
        max_image_pixels: pixels per image (width x height, read from its header before it
            is decoded); a larger one is refused with 413.
        max_image_body_bytes: the body limit of the routes that take images (in place of
            ``max_body_bytes``); base64 adds a third, so 16 MiB carries about 12 MiB of
            images.
        emoji_home: the data directory whose ``emoji/`` (``llmos data prepare
            --with-emoji``) a CLIP model describes images with and searches (default:
            ``$LLMOS_HOME/data``).
        preload: models to load at startup rather than on first use.
        precision: the weights of the encoders served: ``fp32``, or ``auto``: bf16 on a device
            that computes it natively (a CPU with AVX512-BF16 or AMX, a CUDA GPU with bf16),
            fp32 elsewhere and for GPTs, quantized and ONNX models.
        support_encoder: the served embedding model that the customer-service app searches
            its knowledge bases with (``llmos setup`` builds ``e5-zh``).
        support_sentiment_zh: the served classifier of Chinese messages' sentiment (labels
            ``neg``/``pos``); a missing model means no sentiment for that language.
        support_sentiment_en: the same for English messages.
        support_nlu_zh: the served multitask model (intent, slots and sentiment heads, one
            pass) that reads Chinese messages (``configs/finetune/support-zh.yaml``); when
            present it replaces the sentiment classifier for that language, and when it is
            also ``support_encoder`` its pass gives the knowledge base's query vector.
        support_nlu_en: the same for English messages (``configs/finetune/support-en.yaml``).
        support_domain: the domain file (what each intent does: forms, hand-offs, few-shot
            intents); default: the packaged demo domain.
        support_in_domain: drop the NLU head's intent for a message far from every intent
            (``FewShotConfig.in_domain``: a review or a chat starts no form). Its thresholds
            are multilingual-e5's cosines (the default ``support_encoder``); turn it off with
            another encoder, or choose new ones with ``bench/support_gate.py``.
        recommend_model: the served recommender checkpoint the recommendation app answers
            with (``llmos recommend train`` / ``llmos setup`` build ``movielens``).
        recommend_encoder: the served embedding model that reads users' free-text wishes; it
            must be the one that embedded the recommender's catalog (``e5-zh``).
        write_model: the served spelling model the writing assistant corrects with
            (``configs/run/csc-zh.yaml``).
        write_generator: the served GPT the writing assistant continues text with, and
            whose users' LoRA adapters it trains (``llmos setup`` builds ``gpt-zh``).
        write_encoder: the served embedding model the writing assistant finds material with;
            it must be the one that built the shared material index
            (``llmos write materials build``, in ``apps_dir/write/materials``).
        write_english_corpus: the English text (one sentence per line) the English speller
            learns its words and character LM from (default: the prepared corpus's
            ``corpus/en/train.txt``).
        write_chinese_corpus: the Chinese text (one sentence per line) the classic corrector
            learns its character LM from, when ``write_model`` is not served (default: the
            prepared corpus's ``corpus/zh/train.txt``).
        write_confusion: the classic corrector's confusion sets, a directory with
            ``same_pinyin.txt`` and ``same_stroke.txt``, and its noisy-channel prior's
            lexicon where it also holds ``word_freq.txt``, ``person_name.txt``,
            ``place_name.txt`` and ``common_char_set.txt`` (default: the prepared
            ``tasks/csc-zh/confusion``).
        apps_dir: where the apps keep their indexes (default: ``$LLMOS_HOME/apps``); the
            database holds the data, this directory only what is rebuilt from it.
        workers: background-job worker processes started beside the server and stopped with
            it (``llmos worker``; 0: none here, run ``llmos worker`` yourself, anywhere that
            reaches the database).
    """

    models_dir: Path = Path("runs")
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = None
    memory_budget_mb: float = 4096
    max_batch: int = 32
    max_wait_ms: float = 5.0
    queue_size: int = 256
    request_timeout_s: float = 30.0
    rate_limit: float = 50.0
    rate_burst: int = 100
    auth_cache_s: float = 5.0
    max_body_bytes: int = 1 << 20
    max_texts: int = 256
    max_chars: int = 4000
    max_new_tokens: int = 512
    max_images: int = 16
    max_image_bytes: int = 8 << 20
    max_image_pixels: int = 16_000_000
    max_image_body_bytes: int = 16 << 20
    emoji_home: Path | None = None
    preload: tuple[str, ...] = ()
    precision: str = "fp32"
    support_encoder: str = "e5-zh"
    support_sentiment_zh: str = "sentiment-zh"
    support_sentiment_en: str = "sentiment-en"
    support_nlu_zh: str = "support-zh"
    support_nlu_en: str = "support-en"
    support_domain: Path | None = None
    support_in_domain: bool = True
    recommend_model: str = "movielens"
    recommend_encoder: str = "e5-zh"
    write_model: str = "csc-zh"
    write_generator: str = "gpt-zh"
    write_encoder: str = "e5-zh"
    write_english_corpus: Path | None = None
    write_chinese_corpus: Path | None = None
    write_confusion: Path | None = None
    apps_dir: Path | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        self.models_dir = Path(self.models_dir)
        self.apps_dir = Path(self.apps_dir) if self.apps_dir is not None else None
        for name in ("write_english_corpus", "write_chinese_corpus", "write_confusion"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        if self.support_domain is not None:
            self.support_domain = Path(self.support_domain)
        if self.emoji_home is not None:
            self.emoji_home = Path(self.emoji_home)
        checks = {
            "port": 0 <= self.port <= 65535,
            "memory_budget_mb": self.memory_budget_mb > 0,
            "max_batch": self.max_batch >= 1,
            "max_wait_ms": self.max_wait_ms >= 0,
            "queue_size": self.queue_size >= 1,
            "request_timeout_s": self.request_timeout_s > 0,
            "rate_limit": self.rate_limit >= 0,
            "rate_burst": self.rate_burst >= 1,
            "auth_cache_s": self.auth_cache_s >= 0,
            "max_body_bytes": self.max_body_bytes >= 1024,
            "max_texts": self.max_texts >= 1,
            "max_chars": self.max_chars >= 1,
            "max_new_tokens": self.max_new_tokens >= 1,
            "max_images": self.max_images >= 1,
            "max_image_bytes": self.max_image_bytes >= 1,
            "max_image_pixels": self.max_image_pixels >= 1,
            "max_image_body_bytes": self.max_image_body_bytes >= 1024,
            "workers": self.workers >= 0,
            "precision": self.precision in ("fp32", "auto"),
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"serve setting {name} is out of range: {getattr(self, name)}")
