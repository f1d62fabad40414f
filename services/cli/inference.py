"""`kiln generate` and `kiln kv plan`: streamed generation and KV-cache plans."""

from __future__ import annotations

import typer
from rich.table import Table

from services.cli.app import connect, console, request_id

kv_app = typer.Typer(help="KV-cache compression plans.", no_args_is_help=True)

_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _kv_message(
    method: str,
    bits: int,
    budget_bytes: int,
    budget_fp16_tokens: float,
    compress_decode: bool,
    settings: list[str] | None = None,
):
    """The KVCompression message; settings ("field=value") set any of its other fields."""
    from kiln.inference.v1 import inference_pb2 as pb

    kv = pb.KVCompression(method=method, bits=bits, compress_decode=compress_decode)
    if budget_bytes:
        kv.budget_bytes = budget_bytes
    elif budget_fp16_tokens:
        kv.budget_fp16_tokens = budget_fp16_tokens
    for setting in settings or []:
        name, _, value = setting.partition("=")
        field = kv.DESCRIPTOR.fields_by_name.get(name)
        if field is None or not value:
            known = ", ".join(kv.DESCRIPTOR.fields_by_name)
            raise typer.BadParameter(f"{setting!r}: want field=value, a field of {known}")
        current = getattr(kv, name)
        try:
            if isinstance(current, bool):
                parsed: object = _BOOLEANS[value.lower()]
            elif isinstance(current, str):
                parsed = value
            else:
                parsed = type(current)(value)
            setattr(kv, name, parsed)
        except KeyError:
            raise typer.BadParameter(f"{setting!r}: want true or false") from None
        except (TypeError, ValueError) as error:
            raise typer.BadParameter(f"{setting!r}: {error}") from None
    return kv


METHOD_OPTION = typer.Option("none", help="none | streamingllm | h2o | snapkv | pyramidkv")
BITS_OPTION = typer.Option(0, help="16 | 8 | 4 | 2; 0: chosen by the budget policy")
BUDGET_BYTES_OPTION = typer.Option(0, help="KV budget in bytes")
BUDGET_TOKENS_OPTION = typer.Option(0.0, help="KV budget as fp16-equivalent tokens")
COMPRESS_DECODE_OPTION = typer.Option(
    False, help="keep evicting while decoding, within the budget (streamingllm, h2o)"
)
KV_SETTINGS_OPTION = typer.Option(
    None,
    "--kv",
    help="any other KVCompression field, repeatable: --kv window_size=16 --kv adakv=true",
)


def generate(
    model: str,
    prompt: str,
    max_tokens: int = 64,
    temperature: float = 0.0,
    raw: bool = typer.Option(
        False, help="send the prompt as raw text (default: one user message, chat template)"
    ),
    method: str = METHOD_OPTION,
    bits: int = BITS_OPTION,
    budget_bytes: int = BUDGET_BYTES_OPTION,
    budget_fp16_tokens: float = BUDGET_TOKENS_OPTION,
    compress_decode: bool = COMPRESS_DECODE_OPTION,
    kv: list[str] = KV_SETTINGS_OPTION,
    tool_rounds: int = typer.Option(0, help="run the model's python blocks, up to N times"),
) -> None:
    """Stream a generation from the inference service (optionally KV-compressed)."""
    from kiln.inference.v1 import inference_pb2 as pb

    fields = {"messages": pb.Messages(messages=[pb.ChatMessage(role="user", content=prompt)])}
    if raw:
        fields = {"prompt": prompt}
    request = pb.GenerateRequest(
        request_id=request_id(),
        model=model,
        sampling=pb.SamplingParams(max_tokens=max_tokens, temperature=temperature),
        kv=_kv_message(method, bits, budget_bytes, budget_fp16_tokens, compress_decode, kv),
        tools=pb.ToolUse(max_rounds=tool_rounds),
        **fields,
    )
    with connect("inference") as client:
        for response in client.stub.Generate(request):
            if response.WhichOneof("kind") == "chunk":
                console.print(response.chunk.text, end="", markup=False, highlight=False)
            else:
                done = response.complete
    console.print()
    line = f"[dim]{done.finish_reason}; {done.usage.completion_tokens} tokens on {done.engine}"
    if done.HasField("kv_stats"):
        stats = done.kv_stats
        line += (
            f"; KV {stats.method} {stats.bits}-bit, {stats.bytes_used:,} of "
            f"{stats.bytes_full:,} bytes ({stats.bytes_used / stats.bytes_full:.1%}), "
            f"tokens kept per layer {list(stats.tokens_kept_per_layer)}"
        )
        per_head = list(stats.tokens_kept_per_head)
        if len(set(per_head)) > 1:
            line += f", per KV head {min(per_head)}-{max(per_head)}"
    console.print(line + "[/]")


@kv_app.command("plan")
def kv_plan(
    model: str,
    sequence_length: int = typer.Option(
        ..., "--seq-len", min=1, max=2**31 - 1, help="prompt tokens"
    ),
    method: str = METHOD_OPTION,
    bits: int = BITS_OPTION,
    budget_bytes: int = BUDGET_BYTES_OPTION,
    budget_fp16_tokens: float = BUDGET_TOKENS_OPTION,
    compress_decode: bool = COMPRESS_DECODE_OPTION,
    kv: list[str] = KV_SETTINGS_OPTION,
) -> None:
    """The tokens x bits plan for a budget, without running the model."""
    from kiln.inference.v1 import inference_pb2 as pb

    with connect("inference") as client:
        plan = client.stub.PlanKV(
            pb.PlanKVRequest(
                model=model,
                sequence_length=sequence_length,
                kv=_kv_message(method, bits, budget_bytes, budget_fp16_tokens, compress_decode, kv),
            )
        )
    table = Table("bits", "tokens kept (mean/layer)", "bytes", "full bytes", "ratio", "reason")
    table.add_row(
        str(plan.bits),
        str(plan.tokens_kept),
        f"{plan.bytes:,}",
        f"{plan.bytes_full:,}",
        f"{plan.bytes / plan.bytes_full:.3f}",
        plan.reason,
    )
    console.print(table)
    console.print(f"tokens per layer: {list(plan.tokens_kept_per_layer)}")
