"""The domain file: the packaged demo parses, templates render, and every malformed file is
refused with its file and the line of the mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos.apps.support.domain import (
    Domain,
    DomainError,
    IntentSpec,
    SlotSpec,
    TemplateError,
    Text,
    demo_domain,
    parse_domain,
    read_domain,
    render,
    template_fields,
)
from llmos.errors import LlmosError

WEATHER = """\
intents:
  HassGetWeather:
    action: form
    slots:
      name: {ask: {zh: 哪个城市？, en: "Which city?"}, profile: city, remember: true}
    reply: {zh: "{name}的天气", en: "Weather in {name}"}
  complaint:
    action: handoff
    examples: {zh: [我要投诉, 投诉, 我要退款], en: [a complaint, refund, I want a refund]}
"""


def test_a_small_domain_parses_into_its_specs() -> None:
    domain = parse_domain(WEATHER, "d.yaml")
    assert domain == Domain(
        {
            "HassGetWeather": IntentSpec(
                "HassGetWeather",
                "form",
                (SlotSpec("name", Text("哪个城市？", "Which city?"), (), "city", True),),
                Text("{name}的天气", "Weather in {name}"),
            ),
            "complaint": IntentSpec(
                "complaint",
                "handoff",
                examples={
                    "zh": ("我要投诉", "投诉", "我要退款"),
                    "en": ("a complaint", "refund", "I want a refund"),
                },
            ),
        },
        "answer",
        "d.yaml",
    )
    assert domain.action("HassGetWeather") == "form"
    assert domain.action("complaint") == "handoff"
    assert domain.action("HassGetCurrentTime") == domain.action(None) == "answer"
    assert domain.form("complaint") is None
    assert domain.few_shot_examples("en") == {
        "complaint": ["a complaint", "refund", "I want a refund"]
    }
    assert len(domain.few_shot_examples()["complaint"]) == 6


def test_the_packaged_demo_domain() -> None:
    domain = demo_domain()
    assert domain.source.endswith("domain.yaml")
    assert domain.default_action == "answer"
    assert len(domain.intents) >= 10
    assert domain.action("complaint_refund") == "handoff"
    assert domain.action("change_order") == "handoff"
    weather = domain.form("HassGetWeather")
    assert weather is not None and weather.slot("name") == SlotSpec(
        "name", weather.slots[0].ask, (), "city", True
    )
    broadcast = domain.form("HassBroadcast")
    assert broadcast is not None and broadcast.confirm is not None
    timer = domain.form("HassStartTimer")
    assert timer is not None and timer.slots[0].alternatives == ("hours", "seconds")
    climate = domain.form("HassClimateSetTemperature")
    assert climate is not None and climate.slot("area") == SlotSpec("area", profile="area")
    # the few-shot intents: 8 utterances in each language
    few = {name: spec.examples for name, spec in domain.intents.items() if spec.examples}
    # The intents configs/finetune/support-zh.yaml leaves out of training, and three shop ones.
    assert set(few) == {
        "HassVacuumStart",
        "HassVacuumReturnToBase",
        "HassLawnMowerDock",
        "HassLawnMowerStartMowing",
        "order_status",
        "complaint_refund",
        "change_order",
    }
    assert all(len(texts) == 8 for ex in few.values() for texts in ex.values())
    assert all(set(ex) == {"zh", "en"} for ex in few.values())


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_demo_template_renders_with_all_slots_and_with_none(lang: str) -> None:
    for spec in demo_domain().intents.values():
        texts = [spec.reply, spec.confirm, *(s.ask for s in spec.slots)]
        full = {s.name: f"<{s.name}>" for s in spec.slots}
        for text in filter(None, texts):
            template = text.get(lang)
            rendered = render(template, full)
            assert all(f"<{n}>" in rendered for n in template_fields(template)), template
            assert "{" not in render(template, {}) and "[" not in render(template, {})


@pytest.mark.parametrize(
    ("template", "slots", "expected"),
    [
        ("打开{area}{name}。", {"name": "灯"}, "打开灯。"),  # an unfilled slot is empty text
        ("OK, {name}[ in the {area}] is on.", {"name": "lamp"}, "OK, lamp is on."),
        (
            "OK, {name}[ in the {area}] is on.",
            {"name": "lamp", "area": "hall"},
            "OK, lamp in the hall is on.",
        ),
        ("[{hours}小时][{minutes}分钟]", {"minutes": "5"}, "5分钟"),
        ("[{a} and {b}]", {"a": "x"}, ""),  # every slot inside must be filled
        ("{{literal}} [[x]] {v}", {"v": "{name}"}, "{literal} [x] {name}"),  # values not re-read
        ("no slots", {}, "no slots"),
    ],
)
def test_render(template: str, slots: dict[str, str], expected: str) -> None:
    assert render(template, slots) == expected


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{name", "'{' is not closed"),
        ("name}", "'}' without its '{'"),
        ("{0.__class__}", "not a slot name"),
        ("{name:>5}", "not a slot name"),
        ("[a [{b}]]", "do not nest"),
        ("[{a}", "'[' is not closed"),
        ("a]", "']' without its '['"),
        ("[no slot]", "must name a slot"),
    ],
)
def test_malformed_templates(template: str, says: str) -> None:
    with pytest.raises(TemplateError, match=says.replace("[", r"\[").replace("{", r"\{")):
        template_fields(template)


# Each malformed file marks the line its error must name with "# <-".
X = "intents:\n  X:\n"  # lines 1-2
FORM = X + "    action: form\n"  # lines 1-3
REPLY = "    reply: {zh: a, en: b}\n"
MALFORMED = [
    ("intent:  # <-\n  X: {action: answer}\n", "unknown key 'intent'; the keys are"),
    ("default_action: form  # <-\nintents: {}\n", "default_action must be one of answer, handoff"),
    ("default_action: answer  # <-\n", "the domain needs 'intents'"),
    ("intents: [HassTurnOn]  # <-\n", "intents must be a mapping, got a list"),
    (X + "    action: from  # <-\n", "X.action must be one of form, handoff, answer"),
    ("intents:\n  X:  # <-\n    examples: {}\n", "X: missing 'action'"),
    ("intents:\n  X:  # <-\n    action: form\n" + REPLY, "a form needs 'slots'"),
    (
        FORM + "    slots: {}  # <-\n" + REPLY,
        "X.slots: a form needs at least one slot",
    ),
    ("intents:\n  X:  # <-\n    action: form\n    slots: {a: }\n", "a form needs 'reply'"),
    (
        FORM + "    slots: {a: }\n    reply: {zh: a, en: b}\n    replies: {}  # <-\n",
        "X: unknown key 'replies'; the keys are action, slots, reply, confirm, examples",
    ),
    (
        X + "    action: handoff\n    slots: {a: }  # <-\n",
        "'slots' is only for action form",
    ),
    (
        FORM + "    slots:\n      a:\n        ask: {zh: 哪个, en: which}\n"
        "        fr: quel  # <-\n" + REPLY,
        "X.slots.a: unknown key 'fr'; the keys are ask, profile, remember, or",
    ),
    (
        FORM + "    slots:\n      a:\n        ask: {zh: 哪个, fr: quel}  # <-\n" + REPLY,
        "X.slots.a.ask: unknown language 'fr'; the languages are zh, en",
    ),
    (
        FORM + "    slots: {a: }\n    reply:\n      zh: 好  # <-\n",
        "X.reply: missing the en text",
    ),
    (
        FORM + '    slots: {a: }\n    reply:\n      zh: 好\n      en: "Weather in {city}"  # <-\n',
        "X.reply.en: {city} is not a slot of the intent (its slots: a)",
    ),
    (
        FORM + "    slots: {a: , b: }\n"
        '    confirm: {zh: "[确认{a}", en: ok}  # <-\n    reply: {zh: 好, en: ok}\n',
        "X.confirm.zh: a '[' is not closed",
    ),
    (
        FORM + "    slots: {a: }\n    reply: {zh: 好, en: yes}  # <-\n",
        "X.reply.en must be text, got a boolean ('yes') (quote it)",
    ),
    (
        FORM + "    slots: {a: }\n    reply: {zh: 好, en: '  '}  # <-\n",
        "X.reply.en must not be empty",
    ),
    (
        X + "    action: answer\n    examples:\n      zh: [开灯, 关灯, 调灯]\n"
        "      en:\n      - turn on\n      - 42  # <-\n      - dim\n",
        "X.examples.en: an example must be text, got a number ('42')",
    ),
    (
        X + "    action: answer\n    examples:\n      en: [on, off, dim]  # <-\n",
        "X.examples.en: an example must be text, got a boolean ('on')",
    ),
    (
        X + "    action: answer\n    examples:\n      zh: [开灯, 关灯]  # <-\n",
        "X.examples.zh: 2 example(s); give at least 3",
    ),
    (
        X + "    action: answer\n    examples:\n      zh: 开灯  # <-\n",
        "X.examples.zh must be a list of utterances",
    ),
    (
        X + "    action: answer\n    examples:\n      de: [a, b, c]  # <-\n",
        "X.examples: unknown language 'de'",
    ),
    (
        FORM + "    slots:\n      a:\n        remember: true  # <-\n" + REPLY,
        "X.slots.a: remember needs a profile key",
    ),
    (
        FORM + "    slots:\n      a:\n        profile: city\n"
        "        remember: 'yes'  # <-\n" + REPLY,
        "X.slots.a.remember must be true or false, got 'yes'",
    ),
    (
        FORM + "    slots:\n      a:\n        ask: {zh: 多久, en: how long}\n"
        "        or: [hours]  # <-\n      minutes:\n" + REPLY,
        "X.slots.a.or: 'hours' is not another slot of the intent (its slots: a, minutes)",
    ),
    (
        FORM + "    slots:\n      a:\n        or: [b]  # <-\n      b:\n" + REPLY,
        "X.slots.a: 'or' is for a required slot (one with 'ask')",
    ),
    (
        FORM + "    slots:\n      城市:  # <-\n" + REPLY,
        "a slot name is a word of letters, digits and _",
    ),
    (
        "intents:\n  X: {action: answer}\n  X: {action: handoff}  # <-\n",
        "intents: 'X' is given twice",
    ),
    (
        "intents:\n  X: {action: answer\n  Y: {action: handoff}  # <-\n",
        "not valid YAML (expected ',' or '}', but got ':', "
        "while parsing a flow mapping that starts on line 2)",
    ),
    (FORM + "   bad: 1  # <-\n", "not valid YAML"),
    ("# nothing but a comment  # <-\n", "the domain file is empty"),
]


@pytest.mark.parametrize(("text", "says"), MALFORMED)
def test_a_malformed_domain_names_the_file_and_line(text: str, says: str) -> None:
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "# <-" in t)
    with pytest.raises(DomainError) as e:
        parse_domain(text, "shop/domain.yaml")
    message = str(e.value)
    assert message.startswith(f"shop/domain.yaml:{line}: "), message
    assert says in message, message
    assert isinstance(e.value, LlmosError)


def test_read_domain_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "domain.yaml"
    path.write_text(WEATHER, encoding="utf-8")
    assert read_domain(path) == parse_domain(WEATHER, str(path))
    path.write_text(WEATHER.replace("action: handoff", "action: escalate"), encoding="utf-8")
    with pytest.raises(DomainError, match=rf"^{path}:8: complaint.action must be one of"):
        read_domain(path)
    with pytest.raises(DomainError, match="file not found"):
        read_domain(tmp_path / "missing.yaml")
    path.write_bytes(b"intents: {\xff}")
    with pytest.raises(DomainError, match="not valid UTF-8"):
        read_domain(path)


def test_text_in_an_unknown_language_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="zh, en"):
        Text("好", "ok").get("fr")


@pytest.mark.parametrize(
    "config",
    [
        "finetune/support-zh.yaml",
        "run/support-zh.yaml",
        "finetune/support-en.yaml",
        "run/support-en.yaml",
    ],
)
def test_the_demo_few_shot_intents_are_held_out_by_the_nlu_configs(config: str) -> None:
    """The NLU configs leave intents out of training so that the demo domain adds them from
    examples: every few-shot intent of the domain that the data set has must be held out
    (the English configs hold out two more, measured by bench/support_nlu.py)."""
    import yaml

    root = Path(__file__).resolve().parents[3]
    cfg = yaml.safe_load((root / "configs" / config).read_text(encoding="utf-8"))
    held = {i for head in cfg["heads"] for i in head.get("exclude", {}).get("intent", [])}
    hass = {
        n for n, spec in demo_domain().intents.items() if spec.examples and n.startswith("Hass")
    }
    assert hass and hass <= held
