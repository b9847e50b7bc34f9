"""The support desk's domain file: what each intent of the NLU model does (Rasa's domain.yml,
short). The packaged demo is ``domain.yaml`` beside this module; docs/guide.md, "The domain
file", describes the format for shop owners.

    default_action: answer          # intents not listed below
    intents:
      HassGetWeather:
        action: form                # form | handoff | answer
        slots:
          name: {ask: {zh: 您想查哪个城市的天气？, en: Which city?}, profile: city, remember: true}
        reply: {zh: "正在为您查询{name}的天气。", en: "Checking the weather in {name}."}
      complaint_refund:
        action: handoff
        examples: {zh: [我要投诉, ...], en: [I want to file a complaint, ...]}

    form      fill the intent's slots across turns (:mod:`llmos.apps.support.forms`), asking
              for the missing ones, then say ``reply`` (after ``confirm``, a yes/no question,
              when given)
    handoff   pass the conversation to a person (the human queue)
    answer    answer from the knowledge base (the dialogue policy)

A slot with ``ask`` is required: the form asks for it until it is filled, unless one of the
slots named by its ``or`` is filled (a timer needs hours, minutes *or* seconds). A slot without
``ask`` is optional. ``profile: KEY`` fills a missing slot from the customer's profile;
``remember: true`` reports the value the customer gave as a fact to learn into that key.
``examples`` (at least 3 utterances per language) make an intent recognisable without
retraining the NLU model (:mod:`llmos.apps.support.fewshot`).

Every text is given in both languages, zh and en. A template names slots as ``{slot}``; an
unfilled slot renders as empty text, and ``[...]`` keeps its text only when every slot named
inside is filled (hassil's notation for optional text): ``"OK, {name}[ in the {area}] is
on."``. ``{{``, ``}}``, ``[[`` and ``]]`` stand for the characters themselves.

The file is checked whole when it is read: every mistake is a :class:`DomainError` naming the
file and line, with what was expected, so that a typo fails at startup rather than in a
customer's conversation.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from llmos.errors import ConfigError

LANGUAGES = ("zh", "en")
ACTIONS = ("form", "handoff", "answer")
DEFAULT_ACTIONS = ("answer", "handoff")  # a form needs slots, so it cannot be everyone's
MIN_EXAMPLES = 3  # per language: fewer makes a centroid that is one utterance's accident
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # slot names, as the NLU's BIO tags spell them
KEYS = {
    "domain": ("default_action", "intents"),
    "form": ("action", "slots", "reply", "confirm", "examples"),
    "handoff": ("action", "examples"),
    "answer": ("action", "examples"),
    "slot": ("ask", "profile", "remember", "or"),
}
YAML_TYPES = {"bool": "a boolean", "int": "a number", "float": "a number", "null": "empty"}


class DomainError(ConfigError):
    """A domain file is malformed; the message names the file and line."""


class TemplateError(ValueError):
    """A template's syntax is wrong (an unclosed brace, a nested ``[``)."""


# --- templates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    name: str


_Piece = str | _Field
_Part = _Piece | tuple[_Piece, ...]  # a tuple is an optional ``[...]`` section


@functools.lru_cache(maxsize=1024)
def _parse_template(template: str) -> tuple[_Part, ...]:
    # A hand-written scanner rather than str.format: str.format would evaluate "{0.__class__}"
    # and "{name[0]}", and it has no optional sections.
    parts: list[_Part] = []
    section: list[_Piece] | None = None
    text: list[str] = []

    def flush() -> None:
        if text:
            (parts if section is None else section).append("".join(text))
            text.clear()

    i = 0
    while i < len(template):
        c, pair = template[i], template[i : i + 2]
        if pair in ("{{", "}}", "[[", "]]"):
            text.append(c)
            i += 2
        elif c == "{":
            end = template.find("}", i)
            if end < 0:
                raise TemplateError("a '{' is not closed (write '{{' for a brace)")
            name = template[i + 1 : end]
            if not IDENTIFIER.fullmatch(name):
                raise TemplateError(f"{{{name}}} is not a slot name")
            flush()
            (parts if section is None else section).append(_Field(name))
            i = end + 1
        elif c == "}":
            raise TemplateError("a '}' without its '{' (write '}}' for a brace)")
        elif c == "[":
            if section is not None:
                raise TemplateError("'[...]' sections do not nest (write '[[' for a bracket)")
            flush()
            section = []
            i += 1
        elif c == "]":
            if section is None:
                raise TemplateError("a ']' without its '[' (write ']]' for a bracket)")
            flush()
            if not any(isinstance(p, _Field) for p in section):
                raise TemplateError("a '[...]' section must name a slot, as in '[ in the {area}]'")
            parts.append(tuple(section))
            section = None
            i += 1
        else:
            text.append(c)
            i += 1
    if section is not None:
        raise TemplateError("a '[' is not closed (write '[[' for a bracket)")
    flush()
    return tuple(parts)


def template_fields(template: str) -> tuple[str, ...]:
    """The slots a template names, in order; a :class:`TemplateError` if it is malformed."""
    names: list[str] = []
    for part in _parse_template(template):
        for piece in part if isinstance(part, tuple) else (part,):
            if isinstance(piece, _Field):
                names.append(piece.name)
    return tuple(names)


def render(template: str, slots: Mapping[str, str]) -> str:
    """The template with its slots filled in (see the module docstring). Values are inserted
    as they are, never parsed again, so a customer's ``{`` cannot change the template."""

    def piece(p: _Piece) -> str:
        return slots.get(p.name) or "" if isinstance(p, _Field) else p

    out = []
    for part in _parse_template(template):
        if not isinstance(part, tuple):
            out.append(piece(part))
        elif all(slots.get(p.name) for p in part if isinstance(p, _Field)):
            out.extend(piece(p) for p in part)
    return "".join(out)


# --- the domain --------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """One message in both languages; may be a template (see the module docstring)."""

    zh: str
    en: str

    def get(self, lang: str) -> str:
        """The message in ``lang`` (``zh`` or ``en``)."""
        if lang not in LANGUAGES:
            raise ValueError(f"the language must be one of {', '.join(LANGUAGES)}; got {lang!r}")
        return self.zh if lang == "zh" else self.en


@dataclass(frozen=True)
class SlotSpec:
    """One slot of a form.

    Attributes:
        name: the slot's name, as the NLU model tags it (``name``, ``area``, ``order_id``).
        ask: the question that asks for it; a slot with one is required.
        alternatives: other slots any of which also satisfies the requirement (``or``).
        profile: the profile key that fills the slot when the customer did not give it.
        remember: whether a value the customer gives is a fact to learn into ``profile``.
    """

    name: str
    ask: Text | None = None
    alternatives: tuple[str, ...] = ()
    profile: str | None = None
    remember: bool = False

    @property
    def required(self) -> bool:
        return self.ask is not None


@dataclass(frozen=True)
class IntentSpec:
    """What one intent does.

    Attributes:
        name: the intent's label (``HassTurnOn``, ``order_status``).
        action: ``form``, ``handoff`` or ``answer``.
        slots: a form's slots, in the order they are asked for.
        reply: what a form says when it is done.
        confirm: a yes/no question asked before the reply, when given.
        examples: utterances per language that recognise the intent without retraining.
    """

    name: str
    action: str
    slots: tuple[SlotSpec, ...] = ()
    reply: Text | None = None
    confirm: Text | None = None
    examples: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def slot(self, name: str) -> SlotSpec | None:
        """The slot called ``name``, or None when the intent does not declare it."""
        return next((s for s in self.slots if s.name == name), None)


@dataclass(frozen=True)
class Domain:
    """A parsed domain file.

    Attributes:
        intents: each listed intent's spec, by label, in the file's order.
        default_action: the action of intents not listed (``answer`` or ``handoff``).
        source: the file it came from (for messages).
    """

    intents: Mapping[str, IntentSpec]
    default_action: str = "answer"
    source: str = ""

    def action(self, intent: str | None) -> str:
        """What to do with a message of this intent (the default when it is not listed)."""
        spec = self.intents.get(intent) if intent is not None else None
        return spec.action if spec is not None else self.default_action

    def form(self, intent: str | None) -> IntentSpec | None:
        """The intent's spec when it is a form, else None."""
        spec = self.intents.get(intent) if intent is not None else None
        return spec if spec is not None and spec.action == "form" else None

    def few_shot_examples(self, lang: str | None = None) -> dict[str, list[str]]:
        """The example utterances of every intent that has some, in ``lang`` or (None) in
        all languages together: what :class:`~llmos.apps.support.fewshot.FewShotIntents`
        is built from."""
        out = {}
        for name, spec in self.intents.items():
            texts = [t for la, ts in spec.examples.items() if lang in (None, la) for t in ts]
            if texts:
                out[name] = texts
        return out


# --- parsing -----------------------------------------------------------------------------


class _Parser:
    """Walks the YAML node tree (not the loaded values) so that every error has a line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, node: Node, message: str) -> DomainError:
        return DomainError(f"{self.source}:{node.start_mark.line + 1}: {message}")

    def what(self, node: Node) -> str:
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        kind = YAML_TYPES.get(node.tag.rsplit(":", 1)[-1])
        return f"{kind} ({node.value!r})" if kind and node.value else kind or repr(node.value)

    def mapping(
        self, node: Node, what: str, keys: tuple[str, ...] | None = None
    ) -> dict[str, tuple[Node, Node]]:
        """A mapping's entries as key -> (key node, value node); unknown and repeated keys
        are errors (YAML itself lets the last of two equal keys win silently)."""
        if not isinstance(node, MappingNode):
            raise self.error(node, f"{what} must be a mapping, got {self.what(node)}")
        out: dict[str, tuple[Node, Node]] = {}
        for k, v in node.value:
            if not isinstance(k, ScalarNode) or k.tag != "tag:yaml.org,2002:str":
                raise self.error(k, f"{what}: a key must be a name, got {self.what(k)}")
            if k.value in out:
                raise self.error(k, f"{what}: {k.value!r} is given twice")
            if keys is not None and k.value not in keys:
                raise self.error(
                    k, f"{what}: unknown key {k.value!r}; the keys are {', '.join(keys)}"
                )
            out[k.value] = (k, v)
        return out

    def string(self, node: Node, what: str) -> str:
        if isinstance(node, MappingNode) and node.flow_style:
            raise self.error(
                node, f"{what} must be text, got a mapping (quote text that starts with '{{')"
            )
        if not isinstance(node, ScalarNode) or node.tag != "tag:yaml.org,2002:str":
            hint = " (quote it)" if isinstance(node, ScalarNode) and node.value else ""
            raise self.error(node, f"{what} must be text, got {self.what(node)}{hint}")
        if not node.value.strip():
            raise self.error(node, f"{what} must not be empty")
        return node.value.strip()

    def choice(self, node: Node, what: str, choices: tuple[str, ...]) -> str:
        value = self.string(node, what)
        if value not in choices:
            raise self.error(node, f"{what} must be one of {', '.join(choices)}; got {value!r}")
        return value

    def text(self, node: Node, what: str, slots: tuple[str, ...]) -> Text:
        """Both languages' texts, each a template naming only ``slots``."""
        entries = self.mapping(node, what)
        for lang, (k, _) in entries.items():
            if lang not in LANGUAGES:
                raise self.error(k, f"{what}: unknown language {lang!r}; the languages are zh, en")
        texts = {}
        for lang in LANGUAGES:
            if lang not in entries:
                raise self.error(node, f"{what}: missing the {lang} text")
            value_node = entries[lang][1]
            texts[lang] = self.string(value_node, f"{what}.{lang}")
            try:
                fields = template_fields(texts[lang])
            except TemplateError as e:
                raise self.error(value_node, f"{what}.{lang}: {e}") from None
            for name in fields:
                if name not in slots:
                    declared = ", ".join(slots) or "none"
                    raise self.error(
                        value_node,
                        f"{what}.{lang}: {{{name}}} is not a slot of the intent "
                        f"(its slots: {declared})",
                    )
        return Text(**texts)

    def examples(self, node: Node, what: str) -> dict[str, tuple[str, ...]]:
        entries = self.mapping(node, what)
        if not entries:
            raise self.error(node, f"{what}: give utterances under zh and/or en")
        out = {}
        for lang, (k, v) in entries.items():
            if lang not in LANGUAGES:
                raise self.error(k, f"{what}: unknown language {lang!r}; the languages are zh, en")
            if not isinstance(v, SequenceNode):
                raise self.error(v, f"{what}.{lang} must be a list of utterances")
            texts = tuple(self.string(item, f"{what}.{lang}: an example") for item in v.value)
            if len(texts) < MIN_EXAMPLES:
                raise self.error(
                    v,
                    f"{what}.{lang}: {len(texts)} example(s); give at least {MIN_EXAMPLES} "
                    "(8 or so recognise an intent well)",
                )
            out[lang] = texts
        return out

    def slot(self, key: Node, node: Node, what: str, names: tuple[str, ...]) -> SlotSpec:
        """One slot; ``names`` are all the intent's slots (an ask may name a later one)."""
        if not IDENTIFIER.fullmatch(key.value):
            raise self.error(key, f"{what}: a slot name is a word of letters, digits and _")
        if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return SlotSpec(key.value)  # `area:`, like `area: {}`: optional, nothing else
        entries = self.mapping(node, what, KEYS["slot"])
        ask = None
        if "ask" in entries:
            ask = self.text(entries["ask"][1], f"{what}.ask", names)
        profile = None
        if "profile" in entries:
            profile = self.string(entries["profile"][1], f"{what}.profile")
        remember = False
        if "remember" in entries:
            k, v = entries["remember"]
            if not isinstance(v, ScalarNode) or v.tag != "tag:yaml.org,2002:bool":
                raise self.error(v, f"{what}.remember must be true or false, got {self.what(v)}")
            remember = v.value.lower() in ("true", "yes", "on")
            if remember and profile is None:
                raise self.error(k, f"{what}: remember needs a profile key to learn into")
        alternatives: tuple[str, ...] = ()
        if "or" in entries:
            k, v = entries["or"]
            if ask is None:
                raise self.error(k, f"{what}: 'or' is for a required slot (one with 'ask')")
            if not isinstance(v, SequenceNode) or not v.value:
                raise self.error(v, f"{what}.or must be a list of slot names")
            alternatives = tuple(self.string(n, f"{what}.or") for n in v.value)
            for other in alternatives:
                if other not in names or other == key.value:
                    raise self.error(
                        v,
                        f"{what}.or: {other!r} is not another slot of the intent "
                        f"(its slots: {', '.join(names)})",
                    )
        return SlotSpec(key.value, ask, alternatives, profile, remember)

    def intent(self, key: Node, node: Node) -> IntentSpec:
        name = key.value
        entries = self.mapping(node, name)
        if "action" not in entries:
            raise self.error(key, f"{name}: missing 'action' ({', '.join(ACTIONS)})")
        action = self.choice(entries["action"][1], f"{name}.action", ACTIONS)
        for k, _ in entries.values():
            if k.value in KEYS[action]:
                continue
            if k.value in KEYS["form"]:
                raise self.error(k, f"{name}: {k.value!r} is only for action form")
            keys = ", ".join(KEYS[action])
            raise self.error(k, f"{name}: unknown key {k.value!r}; the keys are {keys}")
        examples = {}
        if "examples" in entries:
            examples = self.examples(entries["examples"][1], f"{name}.examples")
        if action != "form":
            return IntentSpec(name, action, examples=examples)

        for required in ("slots", "reply"):
            if required not in entries:
                raise self.error(key, f"{name}: a form needs '{required}'")
        slot_entries = self.mapping(entries["slots"][1], f"{name}.slots")
        if not slot_entries:
            raise self.error(entries["slots"][1], f"{name}.slots: a form needs at least one slot")
        names = tuple(slot_entries)
        slots = tuple(
            self.slot(k, v, f"{name}.slots.{k.value}", names) for k, v in slot_entries.values()
        )
        reply = self.text(entries["reply"][1], f"{name}.reply", names)
        confirm = None
        if "confirm" in entries:
            confirm = self.text(entries["confirm"][1], f"{name}.confirm", names)
        return IntentSpec(name, action, slots, reply, confirm, examples)

    def domain(self, root: Node | None) -> Domain:
        if root is None:
            raise DomainError(f"{self.source}:1: the domain file is empty; it needs 'intents'")
        entries = self.mapping(root, "the domain", KEYS["domain"])
        default = "answer"
        if "default_action" in entries:
            default = self.choice(entries["default_action"][1], "default_action", DEFAULT_ACTIONS)
        if "intents" not in entries:
            raise self.error(root, "the domain needs 'intents' (a mapping of intent names)")
        intents = {
            k.value: self.intent(k, v)
            for k, v in self.mapping(entries["intents"][1], "intents").values()
        }
        return Domain(intents, default, self.source)


def parse_domain(text: str, source: str = "domain") -> Domain:
    """The domain in ``text``, checked whole; errors are :class:`DomainError` naming
    ``source`` and the line."""
    try:
        root = yaml.compose(text.removeprefix("\ufeff"), Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        why = e.problem or e.context
        if e.problem and e.context and e.context_mark and e.context_mark.line + 1 != line:
            # an unclosed bracket is found lines later: say where it was opened
            why += f", {e.context} that starts on line {e.context_mark.line + 1}"
        raise DomainError(f"{source}:{line}: not valid YAML ({why})") from None
    except yaml.YAMLError as e:  # a reader error (a control character) has no mark
        raise DomainError(f"{source}: not valid YAML ({e})") from None
    return _Parser(source).domain(root)


def read_domain(path: str | Path) -> Domain:
    """The domain file at ``path``, checked (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DomainError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DomainError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    return parse_domain(text, str(path))


def demo_domain() -> Domain:
    """The packaged demo domain (``llmos/apps/support/domain.yaml``): a smart home's intents
    from the Home Assistant data set, and a shop's few-shot ones."""
    file = resources.files("llmos.apps.support") / "domain.yaml"
    return parse_domain(file.read_text(encoding="utf-8"), str(file))
