"""Intent + slot examples from Home Assistant's sentence templates.

home-assistant-intents ships, per language, intents whose sentences are hassil templates:
``(打开|开启){area}[的]{name}``, with slot lists and expansion rules (``<turn_on>``). hassil
parses them (:meth:`hassil.intents.Intents.from_dict`); hassil's own sampler
(:func:`hassil.sample.sample_intents`) enumerates the expansions in order and returns bare
strings, so it can neither say where a slot's text lies nor give a balanced sample of a
template's thousands of expansions. This module walks hassil's expression tree with a seeded
RNG instead, one random choice per alternative, and records the character span of every slot.
The surface forms of list values are enumerated with :func:`hassil.sample.sample_expression`.

Slots that Home Assistant fills at run time (areas, floors, device names) and wildcard slots
(messages, timer names, shopping items) get values from the realistic lists below.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from hassil.errors import HassilError
from hassil.expression import (
    Alternative,
    Expression,
    Group,
    ListReference,
    Permutation,
    RuleReference,
    Sentence,
    TextChunk,
)
from hassil.intents import IntentData, Intents, RangeSlotList, SlotList, TextSlotList
from hassil.sample import sample_expression

from llmos.data.sources import normalize_text
from llmos.errors import DataError

logger = logging.getLogger("llmos.data")

__all__ = ["IntentSample", "expand_intents"]

# Values for lists that Home Assistant fills at run time or that are wildcards, "|"-separated.
_RUNTIME_VALUES: dict[str, dict[str, str]] = {
    "zh": {
        "area": "客厅|卧室|主卧|次卧|厨房|书房|餐厅|卫生间|浴室|阳台|车库|儿童房|玄关|花园|走廊",
        "floor": "一楼|二楼|三楼|顶楼|地下一层",
        "message": "晚饭做好了|该出门了|快递到了|大家下楼吃饭|十分钟后开会|外面下雨了记得收衣服",
        "search_query": "周杰伦的歌|轻音乐|郭德纲的相声|新闻联播|儿歌|邓丽君的专辑|钢琴曲",
        "zone": "家|公司|学校|健身房|超市|幼儿园",
        "timer_name": "煮饭|泡面|烤箱|洗衣|午睡|蒸鱼|面膜|煲汤",
        "timer_command": "关闭客厅的灯|打开空调|关掉电视|播放音乐|打开窗帘",
        "shopping_list_item": "牛奶|鸡蛋|面包|苹果|大米|酱油|纸巾|洗衣液|西红柿",
        "todo_list_item": "交水电费|给妈妈打电话|取快递|预约体检|洗车|倒垃圾|交房租",
    },
    "en": {
        "area": "living room|kitchen|bedroom|master bedroom|bathroom|office|dining room|garage"
        "|hallway|basement|garden|kids room|guest room|laundry room|attic",
        "floor": "first floor|second floor|third floor|ground floor|top floor",
        "message": "dinner is ready|it's time to leave|the package has arrived"
        "|everyone come downstairs|the meeting starts in ten minutes|it is raining outside",
        "search_query": "the beatles|jazz for studying|taylor swift|the daily news podcast"
        "|classical piano|abbey road",
        "zone": "home|work|school|the gym|the supermarket",
        "timer_name": "pizza|pasta|laundry|oven|nap|tea|eggs",
        "timer_command": "turn off the lights|start the coffee maker|turn on the fan",
        "shopping_list_item": "milk|eggs|bread|apples|rice|butter|coffee|bananas|paper towels"
        "|dish soap",
        "todo_list_item": "pay the bills|call mom|pick up the package|walk the dog"
        "|take out the trash|book a dentist appointment",
    },
}

# Device names by Home Assistant domain, for the run-time list {name}.
_NAMES_BY_DOMAIN: dict[str, dict[str, str]] = {
    "zh": {
        "light": "台灯|吊灯|床头灯|落地灯|吸顶灯|灯带|筒灯|夜灯|壁灯",
        "switch": "插座|智能插座|热水器|饮水机|加湿器|咖啡机",
        "fan": "风扇|吊扇|落地扇|排风扇|空气净化器",
        "media_player": "电视|音箱|投影仪|智能音箱|电视盒子",
        "cover": "窗帘|卷帘|百叶窗|车库门|纱帘",
        "lock": "门锁|前门锁|后门锁|智能门锁",
        "valve": "水阀|燃气阀|总水阀|浇花水阀",
        "climate": "空调|地暖|暖气|中央空调|新风系统",
        "vacuum": "扫地机器人|扫地机|拖地机器人",
        "lawn_mower": "割草机|割草机器人",
        "binary_sensor": "门磁|窗磁|人体传感器|烟雾报警器|漏水传感器",
        "sensor": "温度计|湿度计|温湿度传感器|空气质量传感器|电量表",
        "person": "小明|妈妈|爸爸|奶奶|李华",
        "todo": "购物清单|待办事项|家务清单",
        "scene": "回家模式|离家模式|影院模式|睡眠模式|起床模式",
        "script": "晚安流程|早安流程|关门检查",
        "weather": "天气|家里天气",
        "button": "门铃|重启按钮",
    },
    "en": {
        "light": "desk lamp|ceiling light|bedside lamp|floor lamp|led strip|porch light",
        "switch": "smart plug|coffee maker|water heater|humidifier",
        "fan": "ceiling fan|desk fan|air purifier|exhaust fan",
        "media_player": "tv|speaker|projector|sound bar|smart speaker",
        "cover": "curtains|blinds|garage door|shades",
        "lock": "front door lock|back door lock|smart lock",
        "valve": "water valve|gas valve|sprinkler valve",
        "climate": "thermostat|air conditioner|heater|heat pump",
        "vacuum": "robot vacuum|roomba",
        "lawn_mower": "lawn mower|robot mower",
        "binary_sensor": "door sensor|window sensor|motion sensor|smoke detector",
        "sensor": "thermometer|humidity sensor|air quality sensor|power meter",
        "person": "alice|bob|mom|dad|grandma",
        "todo": "shopping list|to do list|chores list",
        "scene": "movie night|good morning|bedtime|away mode",
        "script": "goodnight routine|morning routine|lock up",
        "weather": "weather|home forecast",
        "button": "doorbell|restart button",
    },
}
_WHITESPACE = re.compile(r"\s+")
# Templates write "{floor}[楼|层]" and "{floor} [floor]"; floor names already end in them.
_FLOOR_WORDS = ("楼", "层", "floor")
_GENERIC_DOMAINS = ("light", "switch", "fan", "media_player", "climate")


@dataclass
class IntentSample:
    """One expanded sentence.

    Attributes:
        text: the sentence.
        intent: the intent name (``HassTurnOn``).
        template: the template it came from (used to split by template).
        slots: ``{"name", "value", "start", "end"}`` with ``text[start:end] == value``.
    """

    text: str
    intent: str
    template: str
    slots: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Context:
    """What a walk over one template needs."""

    lang: str
    slot_lists: dict[str, SlotList]
    rules: dict[str, Sentence]
    names: list[str]
    rng: random.Random


def _rng(*parts: str) -> random.Random:
    digest = hashlib.sha1("\x1f".join(parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _names_for(data: IntentData, lang: str) -> list[str]:
    """Device names fitting the domain(s) a template targets."""
    domain = (data.slots or {}).get("domain") or (data.requires_context or {}).get("domain")
    domains = [domain] if isinstance(domain, str) else list(domain or _GENERIC_DOMAINS)
    table = _NAMES_BY_DOMAIN[lang]
    names = [n for d in domains for n in table.get(d, "").split("|") if n]
    return names or [n for d in _GENERIC_DOMAINS for n in table[d].split("|")]


def _list_value(ref: ListReference, ctx: _Context) -> str:
    """A surface text for the list reference ``{list}``."""
    if ref.is_inline_range:
        start, stop, step = ref.get_inline_range() or (0, 0, 1)
        return str(ctx.rng.randrange(start, stop + 1, step))
    slot_list = ctx.slot_lists.get(ref.list_name)
    if isinstance(slot_list, TextSlotList):
        value = ctx.rng.choice(slot_list.values)
        forms = list(
            itertools.islice(sample_expression(value.text_in, ctx.slot_lists, ctx.rules), 64)
        )
        return normalize_text(ctx.rng.choice(forms)) if forms else ""
    if isinstance(slot_list, RangeSlotList):
        return str(ctx.rng.randrange(slot_list.start, slot_list.stop + 1, slot_list.step))
    if ref.list_name == "name":
        return ctx.rng.choice(ctx.names)
    values = _RUNTIME_VALUES[ctx.lang].get(ref.list_name)
    if values is None:
        raise KeyError(f"{{{ref.list_name}}}")
    return ctx.rng.choice(values.split("|"))


def _walk(expr: Expression, ctx: _Context, out: list[tuple[str, str | None]]) -> None:
    """Append ``(text, slot name or None)`` pieces of one random expansion of ``expr``."""
    if isinstance(expr, TextChunk):
        out.append((expr.original_text, None))
    elif isinstance(expr, Alternative):
        _walk(ctx.rng.choice(expr.items), ctx, out)
    elif isinstance(expr, Permutation):
        items = list(expr.items)
        ctx.rng.shuffle(items)
        for item in items:
            _walk(item, ctx, out)
            out.append((" ", None))
    elif isinstance(expr, Group):
        for item in expr.items:
            _walk(item, ctx, out)
    elif isinstance(expr, RuleReference):
        if expr.rule_name not in ctx.rules:
            raise KeyError(f"<{expr.rule_name}>")
        _walk(ctx.rules[expr.rule_name].expression, ctx, out)
    elif isinstance(expr, ListReference):
        out.append((_list_value(expr, ctx), expr.slot_name))
    else:
        raise TypeError(f"unexpected hassil expression {type(expr).__name__}")


def _assemble(pieces: list[tuple[str, str | None]]) -> tuple[str, list[dict[str, Any]]]:
    """Join pieces with whitespace collapsed, keeping each slot's character span."""
    text = ""
    slots: list[dict[str, Any]] = []
    for piece, slot in pieces:
        if slot is None:
            piece = _WHITESPACE.sub(" ", piece)
            if piece.startswith(" ") and (not text or text.endswith(" ")):
                piece = piece[1:]
            if slots and slots[-1]["end"] == len(text.rstrip()):
                piece = _drop_repeated_suffix(slots[-1]["value"], piece)
            text += piece
            continue
        value = normalize_text(piece)
        if value:
            slots.append(
                {"name": slot, "value": value, "start": len(text), "end": len(text) + len(value)}
            )
            text += value
    return text.rstrip(), slots


def _drop_repeated_suffix(value: str, piece: str) -> str:
    """Drop a template's optional floor word that repeats the value's (``一楼`` + ``楼``)."""
    for suffix in _FLOOR_WORDS:
        if value.endswith(suffix) and piece.lstrip().startswith(suffix):
            return piece.lstrip()[len(suffix) :]
    return piece


def _expand_template(
    intent: str, data: IntentData, sentence: Sentence, intents: Intents, lang: str, n: int
) -> list[IntentSample]:
    """Up to ``n`` distinct random expansions of one template (deterministic per template)."""
    template = sentence.text or repr(sentence.expression)
    ctx = _Context(
        lang=lang,
        slot_lists={**intents.slot_lists, **(data.slot_lists or {})},
        rules={**intents.expansion_rules, **(data.expansion_rules or {})},
        names=_names_for(data, lang),
        rng=_rng(lang, intent, template),
    )
    samples: dict[str, IntentSample] = {}
    for _ in range(4 * n):
        pieces: list[tuple[str, str | None]] = []
        _walk(sentence.expression, ctx, pieces)
        text, slots = _assemble(pieces)
        if text and text not in samples:
            for slot in slots:
                assert text[slot["start"] : slot["end"]] == slot["value"], (text, slot)
            samples[text] = IntentSample(text, intent, template, slots)
            if len(samples) == n:
                break
    return list(samples.values())


def expand_intents(
    data: dict[str, Any], lang: str, max_per_intent: int = 300
) -> tuple[list[IntentSample], list[str]]:
    """Expand every intent of one home-assistant-intents language file.

    Each template contributes about ``max_per_intent / number of templates`` distinct
    sentences; templates are interleaved so the cap keeps every template represented.

    Args:
        data: the parsed ``<lang>.json`` (``intents``, ``lists``, ``expansion_rules``).
        lang: ``"zh"`` or ``"en"`` (picks the run-time slot values).
        max_per_intent: cap on sentences per intent.

    Returns:
        ``(samples, warnings)``; a template that needs an unknown list or rule is skipped with
        a warning. Intents without sentences are left out.

    Raises:
        DataError: hassil cannot parse the file.
    """
    try:
        intents = Intents.from_dict(data)
    except (HassilError, KeyError, ValueError, TypeError) as e:
        raise DataError(f"home-assistant-intents ({lang}): hassil cannot parse it: {e}") from e
    samples: list[IntentSample] = []
    warnings: list[str] = []
    for name in sorted(intents.intents):
        templates = [(d, s) for d in intents.intents[name].data for s in d.sentences]
        if not templates:
            continue
        per_template = math.ceil(max_per_intent / len(templates))
        groups = []
        for data_, sentence in templates:
            try:
                groups.append(_expand_template(name, data_, sentence, intents, lang, per_template))
            except (KeyError, HassilError) as e:
                warnings.append(
                    f"intents {lang}: {name}: template {sentence.text!r} skipped: no values for {e}"
                )
        mixed = [s for group in itertools.zip_longest(*groups) for s in group if s is not None]
        samples.extend(mixed[:max_per_intent])
    return samples, warnings
