"""Shared toolsynth fixtures: three related restaurant/weather tools, and `Player`, a scripted
LLM that plays kiln's synthesis agents and checkers (the fixed backend of tests and of
benchmarks/toolsynth.py)."""

from __future__ import annotations

import json
import re

from services.toolsynth.core.tools import load_tools

TOOLS = load_tools(
    [
        {
            "name": "find_restaurant",
            "description": "Find a restaurant in a city by cuisine.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name"},
                    "cuisine": {"type": "string", "description": "Cuisine type"},
                },
                "required": ["city"],
            },
            "returns": {
                "type": "object",
                "properties": {
                    "restaurant_id": {"type": "string", "description": "Restaurant identifier"},
                    "name": {"type": "string", "description": "Restaurant name"},
                },
                "required": ["restaurant_id", "name"],
            },
        },
        {
            "name": "book_table",
            "description": "Book a table at a restaurant.",
            "parameters": {
                "type": "object",
                "properties": {
                    "restaurant_id": {"type": "string", "description": "Restaurant identifier"},
                    "guests": {
                        "type": "integer",
                        "description": "Number of guests",
                        "minimum": 1,
                        "maximum": 12,
                    },
                },
                "required": ["restaurant_id", "guests"],
            },
            "returns": {
                "type": "object",
                "properties": {"confirmation": {"type": "string", "description": "Code"}},
                "required": ["confirmation"],
            },
        },
        {
            "name": "get_weather",
            "description": "Get the weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name"}},
                "required": ["city"],
            },
            "returns": {
                "type": "object",
                "properties": {"temperature": {"type": "number", "description": "Celsius"}},
                "required": ["temperature"],
            },
        },
    ]
)
ALL_TYPES = {"single": 1.0, "parallel": 1.0, "dependent": 1.0, "non_tool": 1.0}
ARGS = {
    "get_weather": 'city="{city}"',
    "find_restaurant": 'city="{city}"',
    "book_table": 'restaurant_id="r-{city}", guests=2',
}
RESULTS = {
    "get_weather": '{"temperature": 21.5}',
    "find_restaurant": '{"restaurant_id": "r1", "name": "Tasca"}',
    "book_table": '{"confirmation": "ok-1"}',
}
CITIES = ("Lisbon", "Porto", "Faro", "Braga", "Evora", "Coimbra", "Aveiro", "Sintra")


class Player:
    """A scripted LLM that plays kiln's agents and checkers by reading their prompts; the n-th
    plan names city n (Lisbon0, Porto1, ...), so dialogs differ and a fresh player repeats a
    run exactly."""

    def __init__(self) -> None:
        self.plans = 0

    def __call__(self, text: str) -> str:
        if text.startswith("You are planning"):
            names = re.findall(r'"name": "(\w+)"', text.split("Write a plan")[0])
            city = f"{CITIES[self.plans % len(CITIES)]}{self.plans}"
            self.plans += 1
            if "only chit-chat" in text:
                return f'[{{"kind": "chitchat", "tools": [], "requirement": "talk about {city}"}}]'
            used = names[:2] if "several independent" in text else names[:1]
            need = " and ".join(used)
            return json.dumps(
                [
                    {"kind": "chitchat", "tools": [], "requirement": "greet"},
                    {"kind": "tool", "tools": used, "requirement": f"call {need} for {city}"},
                ]
            )
        if "You are the user" in text:
            return "Please " + re.search(r"What you want in this turn: (.*)\n", text).group(1)
        if "You are an assistant that can call functions" in text:
            last = re.findall(r"<\|(system|user|assistant|tool)\|>", text)[-2]
            user = text.rsplit("<|user|>", 1)[1]
            wanted = re.search(r"call (\w+)(?: and (\w+))? for (\w+)", user)
            if last == "tool" or wanted is None:
                return "Done, all set."
            calls = [
                f"{n}({ARGS[n].format(city=wanted.group(3))})" for n in wanted.groups()[:2] if n
            ]
            return "[" + ", ".join(calls) + "]"
        if text.startswith("You simulate the API"):
            return RESULTS[re.search(r'"name": "(\w+)"', text).group(1)]
        for key in ("grounded", "consistent", "fulfilled"):
            if f'{{"{key}": true}}' in text:
                return f'{{"{key}": true}}'
        raise AssertionError(f"unexpected prompt {text[:80]}")
