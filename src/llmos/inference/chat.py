"""Chat messages (system / user / assistant turns) rendered as one prompt for an
instruction-tuned GPT, with the instruction template the checkpoint was tuned with
(``task.json``'s ``template``; :data:`~llmos.data.clm.PROMPT_TEMPLATE` when it names none).

The checkpoints are tuned on single turns, so a conversation is laid out as the turns it was
tuned on, back to back: system messages open the prompt as a plain paragraph (where Alpaca puts
its preamble), each earlier user turn is the template with its answer after it, and the last
user turn is the template alone, ending where the model writes. One user message and no system
message is exactly the prompt ``generate`` builds for that instruction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmos.checkpoint.task import Instruct
from llmos.data.clm import PROMPT_TEMPLATE
from llmos.errors import LlmosError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str  # system, user or assistant
    content: str


def render_chat(spec: Instruct, messages: Sequence[Message]) -> str:
    """The prompt for ``messages`` (oldest first; the last one the user's), in ``spec``'s
    template. Consecutive user messages are one instruction (joined by a blank line)."""
    template = spec.template or PROMPT_TEMPLATE
    if not messages or messages[-1].role != "user":
        raise LlmosError("the last message must be the user's: the model answers it")
    system = [m.content.strip() for m in messages if m.role == "system" and m.content.strip()]
    parts = ["\n\n".join(system) + "\n\n"] if system else []
    pending: list[str] = []  # the user's messages since the last answer
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            raise LlmosError(f"messages[{i}].role must be one of {list(ROLES)}, got {m.role!r}")
        text = m.content.strip()
        if m.role == "user" and text:
            pending.append(text)
        elif m.role == "assistant":
            if pending:
                parts.append(template.format(instruction="\n\n".join(pending)))
                pending = []
            parts.append(text + "\n\n")
    if not pending:
        raise LlmosError("the user's last message is empty: give the model something to answer")
    parts.append(template.format(instruction="\n\n".join(pending)))
    return "".join(parts)
