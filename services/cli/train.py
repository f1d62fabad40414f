"""`kiln train ...`: LoRA training runs, their checkpoints, and data preparation."""

from __future__ import annotations

import typer
from rich.table import Table

from services.cli.app import (
    SET_OPTION,
    apply_stack_env,
    connect,
    console,
    dataset_ref,
    parse_sets,
    request_id,
    submit_and_follow,
)

app = typer.Typer(
    help="Train LoRA adapters (SFT, DPO, BMC, RISE) and prepare data (RISE, TATA, BMC).",
    no_args_is_help=True,
)


@app.command("run")
def train_run(
    objective: str = typer.Argument(..., help="sft | dpo | bmc_dpo | rise_dpo"),
    base: str = typer.Argument(..., help="a model folder or checkpoints/<run>/<step>"),
    datasets: list[str] = typer.Argument(..., help="JSON Lines files or object-store keys"),
    run: str = typer.Option(..., "--run", help="run name: checkpoints/<run>/<step>"),
    sets: list[str] = SET_OPTION,
) -> None:
    """Train a LoRA adapter as a job, streaming its metrics; prints the checkpoints."""
    from kiln.trainer.v1 import trainer_pb2 as pb
    from services.common.protobuf import struct_from_dict

    apply_stack_env()
    refs = [dataset_ref(d, "DATASETS") for d in datasets]
    request = pb.TrainingRequest(
        request_id=request_id(),
        run_name=run,
        objective=objective,
        base_model=base,
        datasets=refs,
        hyperparameters=struct_from_dict(parse_sets(sets)),
    )
    submit_and_follow("trainer", lambda client: client.stub.SubmitTraining(request))
    train_checkpoints(run)


@app.command("checkpoints")
def train_checkpoints(run: str) -> None:
    """List a run's committed checkpoints."""
    from kiln.trainer.v1 import trainer_pb2 as pb

    with connect("trainer") as client:
        reply = client.stub.ListCheckpoints(pb.ListCheckpointsRequest(run_name=run))
    table = Table("step", "prefix", "objective", "merged")
    for c in reply.checkpoints:
        table.add_row(str(c.step), c.prefix, c.objective, "yes" if c.merged else "")
    console.print(table)


@app.command("prepare")
def train_prepare(
    method: str = typer.Argument(..., help="rise | tata | bmc"),
    model: str = typer.Argument(..., help="a model loaded on the inference service"),
    dataset: str = typer.Argument(..., help="a JSON Lines file or an object-store key"),
    out: str = typer.Option("", "--out", help="output dataset name (default: the method)"),
    sets: list[str] = SET_OPTION,
) -> None:
    """Write RISE pairs, the TATA-selected SFT set or BMC-bridged pairs as a dataset."""
    from kiln.trainer.v1 import trainer_pb2 as pb
    from services.common.protobuf import struct_from_dict

    apply_stack_env()
    ref = dataset_ref(dataset, "DATASET")
    request = pb.PrepareDataRequest(
        request_id=request_id(),
        method=method,
        model=model,
        dataset=ref,
        output_name=out,
        parameters=struct_from_dict(parse_sets(sets)),
    )
    submit_and_follow("trainer", lambda client: client.stub.PrepareData(request))
