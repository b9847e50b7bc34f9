"""Chat rendering (llmos.inference.chat) and the generator's Completion records: token counts
and finish reasons, equal between complete() and stream_completion()."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import llmos
from llmos.checkpoint.task import Instruct
from llmos.data.clm import PROMPT_TEMPLATE
from llmos.errors import LlmosError
from llmos.inference.chat import Message, render_chat
from llmos.inference.generate import top_p_filter

T = "<{instruction}>"


def test_one_user_message_is_the_plain_instruction_prompt() -> None:
    assert render_chat(Instruct(), [Message("user", " 你好 ")]) == PROMPT_TEMPLATE.format(
        instruction="你好"
    )


def test_turns_system_and_consecutive_user_messages() -> None:
    spec = Instruct(template=T)
    messages = [
        Message("system", "be brief"),
        Message("user", "a"),
        Message("user", "b"),
        Message("assistant", "A"),
        Message("system", "and kind"),
        Message("user", "c"),
    ]
    assert render_chat(spec, messages) == "be brief\n\nand kind\n\n<a\n\nb>A\n\n<c>"


@pytest.mark.parametrize(
    ("messages", "words"),
    [
        ([], "last message"),
        ([Message("user", "a"), Message("assistant", "b")], "last message"),
        ([Message("user", "  ")], "empty"),
        ([Message("tool", "x"), Message("user", "a")], "role"),
    ],
)
def test_chat_refuses_what_it_cannot_answer(messages: list[Message], words: str) -> None:
    with pytest.raises(LlmosError, match=words):
        render_chat(Instruct(template=T), messages)


def test_complete_counts_tokens_and_says_why_it_ended(tiny_gpt: Path) -> None:
    pipe = llmos.load(tiny_gpt)
    opts = {"strategy": "greedy", "max_new_tokens": 6, "no_repeat_ngram_size": 0}
    (done,) = pipe.complete(["从前有座山"], **opts)
    (c,) = done
    assert c.text == pipe.generate("从前有座山", **opts)
    assert c.prompt_tokens == len(pipe.tokenizer.encode("从前有座山", add_special_tokens=False).ids)
    assert c.finish_reason == ("length" if c.completion_tokens == 6 else "stop")
    stream = pipe.stream_completion("从前有座山", **opts)
    pieces = []
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as end:
            assert end.value == c
            break
    assert "".join(pieces) == c.text
    # a stop string ends the sequence with finish_reason "stop"
    if len(c.text) > 1:
        ((cut,),) = pipe.complete(["从前有座山"], **opts, stop=(c.text[1:],))
        assert cut.text == c.text[:1] and cut.finish_reason == "stop"
    three = pipe.complete(
        ["a", "b"], **{**opts, "strategy": "sample"}, num_return_sequences=3, seed=0
    )
    assert [len(g) for g in three] == [3, 3]


def test_top_p_below_float32s_smallest_number_keeps_the_likeliest_token() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0]])
    kept = top_p_filter(logits, 5e-324)
    assert kept[0, 1] == 2.0 and torch.isinf(kept[0, [0, 2]]).all()
