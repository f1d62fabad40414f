"""Bad input is the caller's field error, named, never INTERNAL: malformed or deeply nested
JSON, wrong types in dataset rows, non-finite hyperparameters."""

from __future__ import annotations

import math

import pytest
from google.protobuf import struct_pb2

from services.common.errors import InvalidInput
from services.common.json_input import load_json
from services.common.protobuf import struct_to_dict
from services.llm.tokens import encode_prompt
from services.toolsynth.core.grader import parse_calls
from services.trainer.core.data import read_rows

DEEP = "[" * 100_000 + "]" * 100_000


def test_deep_json_is_a_field_error() -> None:
    with pytest.raises(InvalidInput) as caught:
        load_json(DEEP, "functions_json")
    assert (caught.value.field, caught.value.reason) == ("functions_json", "JSON nested too deeply")
    with pytest.raises(InvalidInput) as caught:
        parse_calls(DEEP)
    assert caught.value.field == "calls"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_number_in_a_struct_is_named_by_its_path(value: float) -> None:
    struct = struct_pb2.Struct()
    struct.update({"pool": {"weights": [1.0, value]}, "seed": 3})
    with pytest.raises(InvalidInput) as err:
        struct_to_dict(struct, "parameters")
    assert err.value.field == "parameters.pool.weights[1]"
    assert err.value.reason == f"must be a finite number, got {value}"
    struct["pool"]["weights"][1] = 2.5
    assert struct_to_dict(struct, "parameters") == {"pool": {"weights": [1.0, 2.5]}, "seed": 3.0}


def test_messages_to_a_model_without_a_chat_template_are_a_field_error(tiny_model) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    chat = [{"role": "user", "content": "apple banana"}]
    assert encode_prompt(tokenizer, chat) != encode_prompt(tokenizer, "apple banana")
    tokenizer.chat_template = None
    with pytest.raises(InvalidInput) as caught:
        encode_prompt(tokenizer, chat)
    assert caught.value.field == "messages"
    assert "no chat template" in caught.value.reason
    assert len(encode_prompt(tokenizer, "apple banana")) > 0


def test_kv_settings_in_the_cli_are_typed_or_refused() -> None:
    import typer

    from services.cli.inference import _kv_message

    kv = _kv_message("snapkv", 4, 0, 64.0, False, ["adakv=yes", "window_size=16", "sink_tokens=0"])
    assert (kv.adakv, kv.window_size, kv.HasField("sink_tokens"), kv.budget_fp16_tokens) == (
        True,
        16,
        True,
        64.0,
    )
    assert _kv_message("snapkv", 4, 0, 0.0, False, ["adakv=False"]).adakv is False
    for setting, reason in [
        ("adakv=maybe", "want true or false"),
        ("window_size=wide", "invalid literal"),
        ("windows=3", "a field of"),
        ("adakv", "want field=value"),
    ]:
        with pytest.raises(typer.BadParameter, match=reason):
            _kv_message("snapkv", 4, 0, 0.0, False, [setting])


def test_a_bad_dataset_line_is_named_by_its_number() -> None:
    data = b'{"prompt": "a", "completion": "b"}\n{"prompt": "c", "compl\n'
    with pytest.raises(InvalidInput) as caught:
        read_rows(data, "datasets[0]")
    assert caught.value.field == "datasets[0][line 2]"
    with pytest.raises(InvalidInput) as caught:
        read_rows(b"\xff\xfe", "datasets[0]")
    assert "not UTF-8" in caught.value.reason
    with pytest.raises(InvalidInput, match="each a JSON object"):
        read_rows(b"[1, 2]", "datasets[0]")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"prompt": 5, "completion": ["x"]}, "must be text or a list of chat messages"),
        ({"prompt": [5], "completion": "x"}, "must be an object with role and content"),
        ({"prompt": "a", "completion": ["x"]}, "'completion' must be a non-empty string"),
    ],
)
def test_wrong_types_in_a_training_row_name_the_row(row: dict, reason: str) -> None:
    from services.trainer.core.data import sft_example

    with pytest.raises(InvalidInput) as caught:
        sft_example(None, row, 64, "datasets[row 3]")
    assert (caught.value.field, caught.value.reason) == ("datasets[row 3]", reason)


@pytest.mark.parametrize("name", ["learning_rate", "max_grad_norm", "flat_lora_sigma", "beta"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_hyperparameters_are_refused(name: str, value: float) -> None:
    from services.trainer.core.training import TrainConfig

    with pytest.raises(InvalidInput) as caught:
        TrainConfig.from_hyperparameters("sft", {name: value})
    assert caught.value.field == f"hyperparameters.{name}"


def test_non_finite_numbers_in_any_method_config_are_refused() -> None:
    from services.common.configs import config_from_dict
    from services.toolsynth.core.spec import SynthesisSpec
    from services.toolsynth.core.synthesis import SynthesisConfig

    with pytest.raises(InvalidInput) as caught:
        config_from_dict(SynthesisConfig, {"tau": float("nan")}, "sets.synthesis")
    assert (caught.value.field, caught.value.reason) == (
        "sets.synthesis.tau",
        "must be a finite number",
    )
    with pytest.raises(InvalidInput) as caught:
        SynthesisSpec(count=2, dialog_mix={"single": float("nan")}).validate()
    assert caught.value.field == "dialog_mix.single"


def test_cli_failures_are_one_line_without_a_traceback(tmp_path) -> None:
    import os
    import subprocess
    import sys

    missing = str(tmp_path / "missing.json")
    command = ["toolsynth", "grade", missing, missing, "--calls", missing]
    run = subprocess.run(
        [sys.executable, "-m", "services.cli.main", *command],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    )
    output = (run.stdout + run.stderr).strip()
    assert run.returncode == 1 and "Traceback" not in output, output
    assert output == f"FileNotFoundError: [Errno 2] No such file or directory: '{missing}'"
