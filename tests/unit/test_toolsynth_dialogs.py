"""Tool definitions, the dialog format and its four exports, the rule-layer verifier and mock
tools, on BFCL's function docs and scripted dialogs."""

import json
import random

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from services.toolsynth.core.calls import ToolCall
from services.toolsynth.core.dialogs import Dialog, Turn, canonical_ids, result_text
from services.toolsynth.core.formats import EXPORTERS, IMPORTERS, to_sharegpt
from services.toolsynth.core.mock_tools import MockTool, sample
from services.toolsynth.core.rules import call_errors, dialog_errors, observed_type, stage_report
from services.toolsynth.core.tools import Tool, check_tool, json_schema, load_tools
from tests.datasets import BFCL_DIR

BFCL = BFCL_DIR

WEATHER = Tool(
    "weather.get",
    "Current weather of a city.",
    {
        "type": "dict",
        "properties": {
            "city": {"type": "string", "description": "City name."},
            "unit": {"type": "string", "enum": ["c", "f"], "description": "Unit."},
            "day": {"type": "string", "format": "date", "description": "ISO date."},
        },
        "required": ["city"],
    },
    {
        "type": "object",
        "properties": {"temp": {"type": "number"}, "city": {"type": "string"}},
        "required": ["temp", "city"],
    },
)
FLIGHTS = Tool(
    "flights.search",
    "Flights to a city.",
    {
        "type": "object",
        "properties": {"to": {"type": "string", "description": "Destination."}},
        "required": ["to"],
    },
)


def bfcl_tools() -> list[Tool]:
    rows = [json.loads(x) for x in (BFCL / "BFCL_v4_multiple.json").read_text().splitlines()]
    unique = {f["name"]: f for r in rows for f in r["function"]}
    return load_tools(list(unique.values())[:300], "bfcl")


def weather_dialog(**override) -> Dialog:
    turns = [
        Turn("user", "Weather in Paris and Rome?"),
        Turn(
            "assistant",
            calls=(
                ToolCall("weather.get", {"city": "Paris"}),
                ToolCall("weather.get", {"city": "Rome"}),
            ),
            call_ids=("call_0", "call_1"),
        ),
        Turn(
            "tool",
            result_text({"temp": 21.5, "city": "Paris"}),
            call_id="call_0",
            name="weather.get",
        ),
        Turn(
            "tool",
            result_text({"temp": 25.0, "city": "Rome"}),
            call_id="call_1",
            name="weather.get",
        ),
        Turn("assistant", "Paris is 21.5 and Rome 25."),
    ]
    return Dialog(
        [WEATHER, FLIGHTS], override.get("turns", turns), override.get("type", "parallel")
    )


def test_bfcl_function_docs_are_valid_apis() -> None:
    tools = bfcl_tools()
    failures = {t.name: check_tool(t) for t in tools if check_tool(t)}
    assert len(tools) == 300 and len(failures) <= 3, failures
    assert check_tool(Tool("bad name", "", {"type": "object", "required": ["x"]})) == [
        "api:bad_name",
        "api:no_description",
        "api:required_not_defined",
    ]
    assert json_schema(
        {"type": "dict", "properties": {"x": {"type": "float"}, "y": {"type": "any"}}}
    ) == {
        "type": "object",
        "properties": {"x": {"type": "number"}, "y": {}},
    }


def test_rule_layer_codes() -> None:
    dialog = weather_dialog()
    assert dialog_errors(dialog) == [] and observed_type(dialog) == "parallel"
    assert call_errors(WEATHER, {"city": "Oslo", "unit": "c", "day": "2026-01-02"}) == []
    assert call_errors(WEATHER, {}) == ["call:missing_required"]
    assert call_errors(WEATHER, {"city": "Oslo", "mood": "happy"}) == ["call:unexpected_param"]
    assert call_errors(WEATHER, {"city": 3}) == ["call:type"]
    assert call_errors(WEATHER, {"city": "Oslo", "unit": "k"}) == ["call:enum"]
    assert call_errors(WEATHER, {"city": "Oslo", "day": "tomorrow"}) == ["call:format"]
    assert call_errors(None, {}) == ["call:unknown_tool"]
    turns = dialog.turns
    unanswered = weather_dialog(turns=[*turns[:3], turns[4]])
    assert "dialog:unanswered_call" in dialog_errors(unanswered)
    orphan = weather_dialog(turns=[*turns[:4], Turn("tool", "{}", call_id="call_9"), turns[4]])
    assert "dialog:orphan_tool_turn" in dialog_errors(orphan)
    assert dialog_errors(weather_dialog(turns=turns[:4])) == ["dialog:no_final_response"]
    cut = weather_dialog(turns=[*turns[:4], Turn("assistant", "Paris is (21.5")])
    assert dialog_errors(cut) == ["dialog:truncated_turn"]
    assert dialog_errors(weather_dialog(type="single")) == ["consistency:type"]
    assert dialog_errors(weather_dialog(turns=[Turn("assistant", "Hi")], type="non_tool")) == [
        "dialog:first_turn_not_user"
    ]
    report = stage_report([dialog, unanswered, cut])
    assert report["passed"] == 1 and report["failed"] == 2
    assert report["errors"] == {"dialog:truncated_turn": 1, "dialog:unanswered_call": 1}


def test_dependent_dialog_is_recognized() -> None:
    turns = [
        Turn("user", "Find the warmest of my cities and a flight there."),
        Turn("assistant", calls=(ToolCall("weather.get", {"city": "Rome"}),), call_ids=("call_0",)),
        Turn(
            "tool",
            result_text({"temp": 25.0, "city": "Roma"}),
            call_id="call_0",
            name="weather.get",
        ),
        Turn(
            "assistant", calls=(ToolCall("flights.search", {"to": "Roma"}),), call_ids=("call_1",)
        ),
        Turn("tool", result_text({"status": "ok"}), call_id="call_1", name="flights.search"),
        Turn("assistant", "Booked options to Roma."),
    ]
    dialog = Dialog([WEATHER, FLIGHTS], turns, "dependent")
    assert observed_type(dialog) == "dependent" and dialog_errors(dialog) == []


@pytest.mark.parametrize("fmt", sorted(EXPORTERS))
def test_exports_round_trip(fmt: str) -> None:
    dialog = weather_dialog()
    dialog.meta = {"seed": 3}
    back = IMPORTERS[fmt](json.loads(json.dumps(EXPORTERS[fmt](dialog))))
    assert back.to_dict() == dialog.to_dict()


def test_export_shapes() -> None:
    from services.toolsynth.core.formats import to_hermes, to_openai, to_toolace

    dialog = weather_dialog()
    openai = to_openai(dialog)["messages"][1]
    assert openai["tool_calls"][1] == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather.get", "arguments": '{"city": "Rome"}'},
    }
    hermes = to_hermes(dialog)["messages"]
    assert (
        hermes[0]["content"].endswith("</tools>") and hermes[2]["content"].count("<tool_call>") == 2
    )
    toolace = to_toolace(dialog)["conversations"]
    assert toolace[1] == {
        "from": "assistant",
        "value": "[weather.get(city='Paris'), weather.get(city='Rome')]",
    }
    assert json.loads(toolace[2]["value"])[1] == {
        "name": "weather.get",
        "results": {"city": "Rome", "temp": 25.0},
    }
    mixed = weather_dialog()
    mixed.turns[1] = Turn(
        "assistant", "Let me check.", mixed.turns[1].calls, mixed.turns[1].call_ids
    )
    with pytest.raises(Exception, match="both text and calls"):
        to_sharegpt(mixed)
    assert (
        canonical_ids(
            [
                Turn("assistant", calls=(ToolCall("f"),), call_ids=("x",)),
                Turn("tool", "{}", call_id="x"),
            ]
        )[1].call_id
        == "call_0"
    )


def test_sampled_arguments_and_mock_results_are_valid() -> None:
    tools = bfcl_tools()
    rng = random.Random(0)
    for tool in tools:
        schema = json_schema(tool.parameters)
        arguments = sample(schema, rng)
        assert not list(Draft202012Validator(schema).iter_errors(arguments)), (tool.name, arguments)
    mock = MockTool(WEATHER, seed=1)
    result = mock({"city": "Paris"})
    assert result == mock({"city": "Paris"})  # the same call, the same answer
    validator = Draft202012Validator(json_schema(WEATHER.returns), format_checker=FormatChecker())
    for city in ("Paris", "Rome", "Oslo", "Lima"):
        assert not list(validator.iter_errors(mock({"city": city})))
    assert MockTool(FLIGHTS)({"to": "Rome"}) == {"status": "ok"}
