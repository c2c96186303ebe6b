"""Deterministic prompts sized in tokens of the model's own tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

# A base (non-instruct) model keeps continuing an open-ended diary; the opening
# gives it no natural place to stop.
STORY_HEAD = (
    "The following is the complete, unabridged text of a very long travel diary. "
    "Every entry runs for several pages and describes in detail the towns, the people, "
    "the food, the weather and the roads between them. The diarist never summarizes, "
    "never skips a day and never stops writing."
)
STORY_FILL = [
    " The diary was found in a trunk in an attic in Lisbon, wrapped in oilcloth.",
    " Its pages are numbered by hand and the ink changes colour every few weeks.",
    " The writer was a cartographer who had been asked to survey the coastal roads.",
    " He wrote in the evenings, usually by candlelight, in whatever inn he had reached.",
    " Nothing has been corrected or removed from the original manuscript.",
    " Spelling has been modernised, but the punctuation is his own.",
]
STORY_TAIL = "\n\nDay 1.\n\nWe left the harbour at dawn, and"

SYSTEM_SENTENCES = [
    "You are Atlas, the customer assistant of Northwind Rail, a regional railway company.",
    "Always answer politely, precisely and in complete sentences.",
    "Tickets can be bought online, at station machines, or on board with a surcharge of five euros.",
    "Children under six travel free; children from six to fourteen pay half fare.",
    "A seat reservation is optional on regional trains and mandatory on the express line.",
    "Bicycles are allowed on regional trains outside the morning and evening rush hours.",
    "Dogs travel free if they are small and carried; larger dogs need a child ticket and a muzzle.",
    "Refunds are possible until fifteen minutes before departure, minus a two euro fee.",
    "If a train is more than sixty minutes late, passengers may claim a quarter of the fare back.",
    "If it is more than two hours late, they may claim half of the fare back.",
    "Lost property is kept for thirty days at the central station in Hallenberg.",
    "The express line runs every thirty minutes between Hallenberg and Port Selm from five to midnight.",
    "Regional lines run every hour; on Sundays the first train leaves at seven.",
    "First class costs sixty percent more than second class and includes a free drink.",
    "Season tickets are personal and must be shown together with an identity document.",
    "Never invent timetables: if you do not know a departure time, say so and refer to the website.",
    "Do not give legal advice and do not discuss other railway companies.",
    "When a customer is upset, acknowledge the problem before offering a solution.",
    "Keep answers short unless the customer explicitly asks for details.",
    "Prices: Hallenberg to Port Selm costs 18 euros, Hallenberg to Dornau 9 euros, Dornau to Port Selm 11 euros.",
    "Group tickets for five or more people get a twenty percent discount if booked a day ahead.",
    "Wheelchair assistance must be requested at least one hour before departure.",
    "Stations with step-free access: Hallenberg, Dornau, Port Selm, Kessel and Ulmbach.",
    "Wi-Fi is available on the express line and in the waiting rooms of the five largest stations.",
]

USER_TURNS = [
    "Hello! I want to travel from Hallenberg to Port Selm next Saturday with my two kids, aged 4 and 9. What will it cost?",
    "Can I bring my bicycle on that trip? We would leave around 8 in the morning.",
    "And what about our dog? She is a medium-sized labrador.",
    "Our train back was 75 minutes late last time. Can I still get money back for that?",
    "If we decide to go first class instead, how much more would it be in total?",
    "Please summarise everything we discussed, with the total price for the whole family.",
    "One more question: is there Wi-Fi on the train?",
    "Thank you. Is Dornau station accessible for my grandmother's wheelchair?",
]

# Chat prompts for the concurrency sweep when --api chat is used.
CHAT_TASK = (
    "Write a long, detailed travel diary entry about a day spent walking along a rugged "
    "coastline, describing the weather, the people you meet and the food you eat."
)


Counter = Callable[[str], int]


def make_counter(model_dir: str | Path | None) -> tuple[Counter, str]:
    """Token counter from the model folder's tokenizer.json (fast, no transformers)."""
    if model_dir:
        tj = Path(model_dir) / "tokenizer.json"
        if tj.exists():
            try:
                from tokenizers import Tokenizer

                tok = Tokenizer.from_file(str(tj))
                return (lambda s: len(tok.encode(s, add_special_tokens=False).ids)), "tokenizer.json"
            except Exception:  # noqa: BLE001
                pass
    return (lambda s: max(1, len(s) // 4)), "chars/4 estimate"


def _grow(head: str, fill: list[str], tail: str, target: int, count: Counter) -> str:
    text = head + tail
    i = 0
    while count(text) < target and i < 10_000:
        head += fill[i % len(fill)]
        text = head + tail
        i += 1
    return text


def story_prompt(target_tokens: int, count: Counter) -> str:
    """An open-ended text-completion prompt of about ``target_tokens`` tokens."""
    return _grow(STORY_HEAD, STORY_FILL, STORY_TAIL, target_tokens, count)


def system_prompt(target_tokens: int, count: Counter) -> str:
    """A ~``target_tokens`` system prompt (policy list, repeated with numbering)."""
    lines: list[str] = []
    n = 0
    while count("\n".join(lines)) < target_tokens and n < 10_000:
        s = SYSTEM_SENTENCES[n % len(SYSTEM_SENTENCES)]
        lines.append(f"{n + 1}. {s}")
        n += 1
    return "Rules for this conversation:\n" + "\n".join(lines)


def tagged(text: str, tag: str) -> str:
    """Prefix a unique tag so no server can reuse a cached prefix of ``text``."""
    return f"[{tag}] {text}"


def dump_examples(count: Counter) -> str:
    return json.dumps(
        {"story_100": story_prompt(100, count), "system_500": system_prompt(500, count)}, indent=2
    )
