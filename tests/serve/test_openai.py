"""The OpenAI-compatible surface (/openai/v1) driven by real clients (the official ``openai``
package, LangChain's OpenAI wrappers) against a live llmos server on localhost; every answer is
checked against the Python API (``llmos.load``) on the same checkpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import torch
from tiny_models import save_tiny_gpt

import llmos
from llmos.checkpoint.io import save_checkpoint
from llmos.models.bert import BertForPreTraining
from llmos.text.tokenizer import load_tokenizer
from serve.conftest import Live, bert_config, metric, start

# Not the default template: the answers must follow the checkpoint's own task.json.
TEMPLATE = "Q: {instruction}\nA:"
QUESTION = "今天天气怎么样"
TEXTS = ["我们今天参观城市。", "老师昨天讨论经济。", "学生经常学习历史。"]


@pytest.fixture(scope="module")
def models(
    tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path, bpe_tokenizer: Path
) -> Path:
    """``chat`` (a tiny GPT with an instruct task.json), ``gpt`` (the same weights, no task),
    ``emb`` (a tiny embedding encoder) and ``mlm`` (a pretrained encoder: no chat)."""
    root = tmp_path_factory.mktemp("openai") / "models"
    save_tiny_gpt(bpe_tokenizer, root / "gpt")
    save_tiny_gpt(bpe_tokenizer, root / "chat")
    task = {"task": "instruct", "template": TEMPLATE, "template_with_input": TEMPLATE}
    (root / "chat" / "task.json").write_text(json.dumps(task), encoding="utf-8")
    tok = load_tokenizer(tiny_tokenizer)
    cfg = bert_config(tok.get_vocab_size())
    torch.manual_seed(0)
    emb = {"task": "embedding", "pooling": "mean", "normalize": True}
    save_checkpoint(root / "emb", BertForPreTraining(cfg), cfg, tok, emb)
    save_checkpoint(root / "mlm", BertForPreTraining(cfg), cfg, tok)
    return root


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    d = tmp_path_factory.mktemp("db")
    runner, live = start(models, f"sqlite:///{d / 'llmos.db'}", rate_limit=0, apps_dir=d)
    with runner:
        yield live


def client(live: Live, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{live.url}/openai/v1", api_key=key or live.alice, max_retries=0, timeout=60
    )


def greedy(models: Path, name: str, prompt: str, max_new_tokens: int) -> str:
    """The Python API's answer to the same request (the prompt exactly as the server sees it)."""
    pipe = llmos.load(models / name)
    return pipe.generate(prompt, raw=True, strategy="greedy", max_new_tokens=max_new_tokens)


def n_tokens(models: Path, name: str, text: str) -> int:
    return len(llmos.load(models / name).tokenizer.encode(text, add_special_tokens=False).ids)


# --- chat ---------------------------------------------------------------------------------------


def test_chat_answers_in_the_checkpoints_template_plain_and_streamed(
    server: Live, models: Path
) -> None:
    want = greedy(models, "chat", TEMPLATE.format(instruction=QUESTION), 12)
    c = client(server)
    messages = [{"role": "user", "content": QUESTION}]
    r = c.chat.completions.create(model="chat", messages=messages, temperature=0, max_tokens=12)
    assert r.object == "chat.completion" and r.model == "chat" and r.id.startswith("chatcmpl-")
    (choice,) = r.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == want
    assert choice.finish_reason in ("stop", "length")
    prompt_tokens = n_tokens(models, "chat", TEMPLATE.format(instruction=QUESTION))
    assert r.usage.prompt_tokens == prompt_tokens
    assert r.usage.total_tokens == prompt_tokens + r.usage.completion_tokens
    assert 1 <= r.usage.completion_tokens <= 12
    if choice.finish_reason == "length":
        assert r.usage.completion_tokens == 12

    chunks = list(
        c.chat.completions.create(
            model="chat",
            messages=messages,
            temperature=0,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    joined = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert joined == want
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == choice.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == r.usage
    assert {ch.id for ch in chunks} == {chunks[0].id}


def test_chat_lays_out_system_and_earlier_turns(server: Live, models: Path) -> None:
    messages = [
        {"role": "system", "content": "你是助手。"},
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！"},
        {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
    ]
    prompt = (
        "你是助手。\n\n"
        + TEMPLATE.format(instruction="你好")
        + "你好！\n\n"
        + TEMPLATE.format(instruction=QUESTION)
    )
    r = client(server).chat.completions.create(
        model="chat", messages=messages, temperature=0, max_tokens=8
    )
    assert r.choices[0].message.content == greedy(models, "chat", prompt, 8)
    assert r.usage.prompt_tokens == n_tokens(models, "chat", prompt)


def test_chat_samples_n_answers_reproducibly_with_a_seed(server: Live) -> None:
    c = client(server)
    ask = {"model": "chat", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8}
    a = c.chat.completions.create(**ask, n=3, seed=7, temperature=1.5, top_p=0.9)
    b = c.chat.completions.create(**ask, n=3, seed=7, temperature=1.5, top_p=0.9)
    assert [x.index for x in a.choices] == [0, 1, 2]
    assert [x.message.content for x in a.choices] == [x.message.content for x in b.choices]
    assert 3 <= a.usage.completion_tokens <= 3 * 8  # every choice's tokens
    stopped = c.chat.completions.create(**ask, temperature=0, stop=["\n"])
    assert "\n" not in stopped.choices[0].message.content


# --- completions ---------------------------------------------------------------------------------


def test_completions_continue_each_prompt_as_given(server: Live, models: Path) -> None:
    c = client(server)
    prompts = ["从前有座山", "今天天气"]
    r = c.completions.create(model="gpt", prompt=prompts, temperature=0, max_tokens=10)
    assert r.object == "text_completion"
    assert [x.index for x in r.choices] == [0, 1]
    assert [x.text for x in r.choices] == [greedy(models, "gpt", p, 10) for p in prompts]
    assert r.usage.prompt_tokens == sum(n_tokens(models, "gpt", p) for p in prompts)
    # An instruction-tuned model continues the raw prompt too (no template on /completions).
    raw = c.completions.create(model="chat", prompt=prompts[0], temperature=0, max_tokens=10)
    assert raw.choices[0].text == greedy(models, "chat", prompts[0], 10)
    chunks = list(
        c.completions.create(
            model="gpt", prompt=prompts[0], temperature=0, max_tokens=10, stream=True
        )
    )
    assert "".join(ch.choices[0].text for ch in chunks) == r.choices[0].text
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason
    # OpenAI's default max_tokens for completions is 16
    default = c.completions.create(model="gpt", prompt=prompts[0], temperature=0)
    assert default.usage.completion_tokens <= 16


# --- embeddings ----------------------------------------------------------------------------------


def test_embeddings_equal_the_python_api(server: Live, models: Path) -> None:
    want = llmos.load(models / "emb").embed(TEXTS, kind="passage")
    c = client(server)
    as_base64 = c.embeddings.create(model="emb", input=TEXTS)  # the client asks for base64
    as_floats = c.embeddings.create(model="emb", input=TEXTS, encoding_format="float")
    for r in (as_base64, as_floats):
        assert r.model == "emb" and [d.index for d in r.data] == [0, 1, 2]
        got = np.array([d.embedding for d in r.data])
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    ids = llmos.load(models / "emb").tokenizer.encode_batch(TEXTS)
    assert as_floats.usage.prompt_tokens == sum(len(e.ids) for e in ids)
    one = c.embeddings.create(model="emb", input=TEXTS[0], dimensions=want.shape[1])
    np.testing.assert_allclose(one.data[0].embedding, want[0], atol=1e-6, rtol=0)
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="emb", input=TEXTS, dimensions=8)
    assert e.value.body["param"] == "dimensions"


def test_models_lists_what_this_surface_serves(server: Live) -> None:
    c = client(server)
    ids = [m.id for m in c.models.list()]
    assert ids == ["chat", "emb", "gpt", "mlm"]  # a pretrained encoder embeds too
    m = c.models.retrieve("chat")
    assert (m.id, m.object, m.owned_by) == ("chat", "model", "llmos") and m.created > 0
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("nope")


# --- errors --------------------------------------------------------------------------------------

CHAT = {"model": "chat", "messages": [{"role": "user", "content": QUESTION}]}


@pytest.mark.parametrize(
    ("ask", "error", "param", "code", "words"),
    [
        ({**CHAT, "model": "nope"}, openai.NotFoundError, "model", "model_not_found", "nope"),
        ({**CHAT, "temperature": 3}, openai.BadRequestError, "temperature", None, "less than"),
        ({**CHAT, "max_tokens": 100_000}, openai.BadRequestError, "max_tokens", None, "at most"),
        ({**CHAT, "max_tokens": 64}, openai.BadRequestError, "max_tokens", "context", "context"),
        ({**CHAT, "presence_penalty": 0.5}, openai.BadRequestError, "presence_penalty", None, ""),
        ({**CHAT, "frequency_penalty": 1}, openai.BadRequestError, "frequency_penalty", None, ""),
        ({**CHAT, "logprobs": True}, openai.BadRequestError, "logprobs", None, "not supported"),
        ({**CHAT, "n": 2, "stream": True}, openai.BadRequestError, "n", None, "stream"),
        ({**CHAT, "model": "gpt"}, openai.BadRequestError, "model", None, "/completions"),
        ({**CHAT, "model": "emb"}, openai.BadRequestError, "model", None, "embedding"),
        (
            {**CHAT, "messages": [{"role": "assistant", "content": "hi"}]},
            openai.BadRequestError,
            "messages",
            None,
            "last message",
        ),
        ({**CHAT, "messages": []}, openai.BadRequestError, "messages", None, "at least 1"),
        (
            {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]},
            openai.BadRequestError,
            "messages",
            None,
            "characters",
        ),
    ],
)
def test_chat_errors_take_openais_envelope(
    server: Live,
    ask: dict[str, object],
    error: type[openai.APIStatusError],
    param: str,
    code: str | None,
    words: str,
) -> None:
    with pytest.raises(error) as e:
        client(server).chat.completions.create(**ask)
    body = e.value.body
    assert set(body) == {"message", "type", "param", "code"}
    assert body["param"] == param and body["type"] == "invalid_request_error"
    assert code is None or code in body["code"]
    assert words in body["message"]
    assert "Traceback" not in body["message"]


def test_other_errors_take_openais_envelope(server: Live) -> None:
    with pytest.raises(openai.AuthenticationError) as e:
        client(server, key="llmos_not-a-key").models.list()
    assert e.value.body["code"] == "invalid_api_key"
    with httpx.Client(base_url=f"{server.url}/openai/v1") as h:
        r = h.post("/embeddings", json={"model": "emb", "input": "x"})  # no key at all
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert "Bearer" in r.json()["error"]["message"]
        auth = {"Authorization": f"Bearer {server.alice}"}
        as_json = {**auth, "Content-Type": "application/json"}
        r = h.post("/embeddings", content=b"{not json", headers=as_json)
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
        r = h.post("/embeddings", json={"model": "emb", "input": "x", "colour": 1}, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["param"] == "colour"
        r = h.get("/nope", headers=auth)
        assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        client(server).embeddings.create(model="gpt", input="x")
    assert e.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as e:
        client(server).completions.create(model="gpt", prompt="x", echo=True)
    assert e.value.body["param"] == "echo"
    # the native surface keeps its own shape
    with server.client(server.alice) as h:
        r = h.post("/v1/embed", json={"model": "nope", "texts": ["x"]})
        assert r.status_code == 404 and set(r.json()["error"]) == {"type", "message"}


def test_routes_are_counted_in_the_servers_metrics(server: Live) -> None:
    with server.client() as h:
        before = metric(h, "llmos_requests_total", route="/openai/v1/embeddings", status="200")
    client(server).embeddings.create(model="emb", input="x")
    with server.client() as h:
        after = metric(h, "llmos_requests_total", route="/openai/v1/embeddings", status="200")
    assert after == before + 1


def test_one_rate_limit_per_key_on_both_surfaces(models: Path, tmp_path: Path) -> None:
    runner, live = start(models, f"sqlite:///{tmp_path / 'db'}", rate_limit=0.01, rate_burst=2)
    with runner, live.client(live.alice) as h:
        assert h.get("/v1/models").status_code == 200
        assert h.get("/v1/models").status_code == 200
        with pytest.raises(openai.RateLimitError) as e:
            client(live).models.list()
        assert e.value.body["type"] == "rate_limit_error"
        assert e.value.response.headers["retry-after"]
        assert client(live, key=live.bob).models.list().data  # another key, its own bucket


# --- conversation memory --------------------------------------------------------------------


def test_memory_is_used_only_when_the_owner_allows_it(server: Live, models: Path) -> None:
    c = client(server, key=server.bob)
    ask = {**CHAT, "temperature": 0, "max_tokens": 6, "user": "bob"}
    with server.client(server.bob) as h:
        c.chat.completions.create(**ask)  # off by default: nothing stored, nothing read
        assert h.get("/v1/me/memory").json()["memory"] == []
        h.patch("/v1/me/profile", json={"changes": {"openai_memory": True}})
        first = c.chat.completions.create(**ask).choices[0].message.content
        stored = [(m["role"], m["content"]) for m in h.get("/v1/me/memory").json()["memory"]]
        assert stored == [("user", QUESTION), ("assistant", first)][: 1 + bool(first.strip())]
        second = c.chat.completions.create(
            **{**ask, "messages": [{"role": "user", "content": "好"}]}
        )
        prompt = (
            TEMPLATE.format(instruction=QUESTION)
            + (first.strip() + "\n\n" if first.strip() else "")
            + TEMPLATE.format(instruction="好")
        )
        if not first.strip():  # no answer stored: the two questions are one instruction
            prompt = TEMPLATE.format(instruction=f"{QUESTION}\n\n好")
        assert second.choices[0].message.content == greedy(models, "chat", prompt, 6)
        # another label is only a label: no memory read or written
        n = len(h.get("/v1/me/memory").json()["memory"])
        c.chat.completions.create(**{**ask, "user": "alice"})
        assert len(h.get("/v1/me/memory").json()["memory"]) == n
    with server.client(server.alice) as h:
        assert h.get("/v1/me/memory").json()["memory"] == []  # bob's memory stays bob's


# --- LangChain ---------------------------------------------------------------------------------


def test_langchain_openai_wrappers(server: Live, models: Path) -> None:
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    base = f"{server.url}/openai/v1"
    chat = ChatOpenAI(
        model="chat", base_url=base, api_key=server.alice, temperature=0, max_tokens=12
    )
    want = greedy(models, "chat", TEMPLATE.format(instruction=QUESTION), 12)
    assert chat.invoke(QUESTION).content == want
    assert "".join(str(x.content) for x in chat.stream(QUESTION)) == want
    # check_embedding_ctx_length off: it would fetch tiktoken's OpenAI vocabularies
    emb = OpenAIEmbeddings(
        model="emb", base_url=base, api_key=server.alice, check_embedding_ctx_length=False
    )
    got = np.array(emb.embed_documents(TEXTS))
    np.testing.assert_allclose(got, llmos.load(models / "emb").embed(TEXTS), atol=1e-6, rtol=0)
