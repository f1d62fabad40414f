"""Trainer end to end: gRPC -> Celery worker -> S3 checkpoints -> inference loads them; a
killed worker's run resumes from its latest checkpoint and ends where an uninterrupted run
ends."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import grpc
import pytest
import torch
from google.protobuf import struct_pb2

from kiln.common.v1 import common_pb2
from kiln.inference.v1 import inference_pb2 as ipb
from kiln.trainer.v1 import trainer_pb2 as pb
from services.common.clients import KilnClient
from services.common.objectstore import ObjectStore
from services.common.protobuf import ref_to_pb
from services.common.settings import Settings, get_settings
from services.trainer.checkpoints import list_checkpoints
from services.trainer.core.training import TrainConfig
from services.trainer.runs import run_fingerprint, run_training
from tests.integration.test_jobs import wait_for

SFT_ROWS = [
    {"prompt": f"Count from {i}:", "completion": " ".join(str(i + j) for j in range(40))}
    for i in range(16)
]
PAIRS = [
    {"prompt": f"What is {i} + {i}?", "chosen": f"{i} + {i} = {2 * i}", "rejected": f"{i + 1}"}
    for i in range(8)
]


def upload(store: ObjectStore, key: str, rows: list[dict]) -> common_pb2.ObjectRef:
    data = "\n".join(json.dumps(r) for r in rows).encode()
    return ref_to_pb(store.put_bytes(key, data, "application/x-ndjson"))


def struct(values: dict) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def watch(client: KilnClient, job_id: str, timeout: float = 180) -> list[common_pb2.Job]:
    seen = list(client.jobs.WatchJob(common_pb2.WatchJobRequest(job_id=job_id), timeout=timeout))
    assert seen[-1].state == common_pb2.JOB_STATE_SUCCEEDED, seen[-1].error
    return seen


def adapter_tensors(store: ObjectStore, prefix: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(store.get_bytes(store.manifest_refs(prefix)["adapter_model.safetensors"]))


def trainer_run(store: ObjectStore, config: TrainConfig, model: Path, settings: Settings):
    """run(name, crash_at=None): run_training on SFT_ROWS in this process (with its helper
    ranks when config.world_size > 1), raising after step crash_at as a lost worker would."""
    from services.trainer.ranks import helper_ranks

    fingerprint = run_fingerprint(config, str(model), ["d"])

    def run(name: str, crash_at: int | None = None) -> None:
        def on_step(result, total) -> None:
            if result.step == crash_at:
                raise RuntimeError("worker lost")

        with helper_ranks(
            config, str(model), SFT_ROWS, store, f"runs/{name}", settings
        ) as join_group:
            run_training(
                store,
                name,
                str(model),
                model,
                SFT_ROWS,
                config,
                fingerprint,
                settings.effective_cache_dir,
                on_step,
                join_group,
            )

    return run


def generate(client: KilnClient, model: str) -> str:
    request = ipb.GenerateRequest(
        request_id=f"g-{model}",
        model=model,
        prompt="Count from 3:",
        sampling=ipb.SamplingParams(max_tokens=8),
    )
    return list(client.stub.Generate(request, timeout=60))[-1].complete.text


def test_sft_and_dpo_jobs_write_checkpoints_that_inference_loads(
    grpc_server, worker, kiln_env: Settings, tiny_model: Path
) -> None:
    store = ObjectStore(kiln_env)
    trainer = grpc_server("trainer", kiln_env)
    inference = grpc_server("inference", kiln_env)
    worker("trainer")
    sft_data = upload(store, "datasets/count/1/data.jsonl", SFT_ROWS)
    pair_data = upload(store, "datasets/pairs/1/data.jsonl", PAIRS)
    with KilnClient("trainer", target=trainer.target) as client:
        sft = client.stub.SubmitTraining(
            pb.TrainingRequest(
                request_id="sft-1",
                run_name="count-sft",
                objective="sft",
                base_model=str(tiny_model),
                datasets=[sft_data],
                hyperparameters=struct(
                    {
                        "max_steps": 6,
                        "batch_size": 4,
                        "learning_rate": 3e-3,
                        "save_every": 3,
                        "merge": True,
                        "flat_lora_sigma": 0.05,
                    }
                ),
            )
        )
        seen = watch(client, sft.id)
        assert {"loss", "lr", "tokens_per_s", "grad_norm"} <= set(seen[-1].progress.metrics)
        history = store.get_bytes(f"runs/{sft.id}/metrics.jsonl").splitlines()
        losses = [json.loads(line)["loss"] for line in history]
        assert len(losses) == 6 and losses[-1] < losses[0]
        listed = client.stub.ListCheckpoints(pb.ListCheckpointsRequest(run_name="count-sft"))
        assert [c.step for c in listed.checkpoints] == [3, 6]
        assert [c.merged for c in listed.checkpoints] == [False, True]
        assert listed.checkpoints[-1].prefix == "checkpoints/count-sft/6"

        dpo = client.stub.SubmitTraining(
            pb.TrainingRequest(
                request_id="dpo-1",
                run_name="pairs-dpo",
                objective="dpo",
                base_model="checkpoints/count-sft/6/merged",
                datasets=[pair_data],
                hyperparameters=struct({"max_steps": 4, "batch_size": 4, "learning_rate": 5e-3}),
            )
        )
        seen = watch(client, dpo.id)
        final = dict(seen[-1].progress.metrics)
        assert {"rewards/margin", "rewards/accuracy", "rewards/chosen"} <= set(final)
        assert final["rewards/margin"] > 0
        assert seen[-1].summary["total_steps"] == 4

    with KilnClient("inference", target=inference.target) as client:
        client.stub.LoadModel(ipb.LoadModelRequest(name="base", local_path=str(tiny_model)))
        client.stub.LoadModel(
            ipb.LoadModelRequest(name="adapter", checkpoint="checkpoints/count-sft/6")
        )
        client.stub.LoadModel(
            ipb.LoadModelRequest(name="merged", checkpoint="checkpoints/count-sft/6/merged")
        )
        client.stub.LoadModel(
            ipb.LoadModelRequest(name="dpo", checkpoint="checkpoints/pairs-dpo/4")
        )
        base, adapter, merged = (generate(client, m) for m in ("base", "adapter", "merged"))
        assert adapter == merged  # the merged weights are base + the adapter
        assert adapter != base
        assert generate(client, "dpo")


def test_training_rejects_bad_requests(grpc_server, kiln_env: Settings, tiny_model: Path) -> None:
    server = grpc_server("trainer", kiln_env)
    good = {
        "request_id": "r",
        "run_name": "ok",
        "objective": "sft",
        "base_model": str(tiny_model),
        "datasets": [common_pb2.ObjectRef(key="datasets/x/1/data.jsonl")],
    }
    cases = [
        ({"run_name": "Bad Name"}, "run_name"),
        ({"objective": "ppo"}, "objective"),
        ({"hyperparameters": struct({"lora_r": 0})}, "hyperparameters.lora_r"),
        ({"hyperparameters": struct({"bogus": 1})}, "hyperparameters.bogus"),
        ({"datasets": []}, "datasets"),
        ({"base_model": "checkpoints/none/1"}, "base_model"),
    ]
    with KilnClient("trainer", target=server.target) as client:
        for change, field in cases:
            with pytest.raises(grpc.RpcError) as err:
                client.stub.SubmitTraining(pb.TrainingRequest(**{**good, **change}))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            client.stub.PrepareData(
                pb.PrepareDataRequest(
                    request_id="p",
                    method="rise",
                    model="m",
                    dataset=common_pb2.ObjectRef(key="d"),
                    parameters=struct({"samples_per_problem": 0}),
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:
            client.stub.ListCheckpoints(pb.ListCheckpointsRequest(run_name="nothing"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_resumed_run_ends_where_an_uninterrupted_run_ends(
    kiln_env: Settings, tiny_model: Path
) -> None:
    store = ObjectStore(kiln_env)
    config = TrainConfig.from_hyperparameters(
        "sft",
        {
            "max_steps": 6,
            "batch_size": 4,
            "save_every": 2,
            "learning_rate": 3e-3,
            "lora_dropout": 0.1,
            "flat_lora_sigma": 0.1,
        },
    )
    train = trainer_run(store, config, tiny_model, kiln_env)
    train("straight")
    with pytest.raises(RuntimeError):
        train("crashy", crash_at=5)  # after the checkpoint at step 4
    assert [c.step for c in list_checkpoints(store, "crashy")] == [2, 4]
    train("crashy")
    assert [c.step for c in list_checkpoints(store, "crashy")] == [2, 4, 6]
    straight = adapter_tensors(store, "checkpoints/straight/6")
    resumed = adapter_tensors(store, "checkpoints/crashy/6")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], atol=1e-6, rtol=1e-5)
    other = TrainConfig.from_hyperparameters("sft", {"max_steps": 3})
    from services.common.errors import FailedPrecondition

    with pytest.raises(FailedPrecondition):
        run_training(
            store,
            "crashy",
            str(tiny_model),
            tiny_model,
            SFT_ROWS,
            other,
            run_fingerprint(other, str(tiny_model), ["d"]),
            kiln_env.effective_cache_dir,
        )


@pytest.fixture
def slow_redelivery(kiln_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("KILN_TASK_TIME_LIMIT_S", "180")  # 300 steps, twice on a busy machine
    monkeypatch.setenv("KILN_VISIBILITY_TIMEOUT_S", "20")
    # one torch thread: two spinning OpenMP threads beside any other busy process make these
    # tiny steps 20x slower
    monkeypatch.setenv("KILN_TORCH_THREADS", "1")
    get_settings.cache_clear()
    return get_settings()


def submit_sft(
    client: KilnClient,
    run_name: str,
    model: Path,
    data: common_pb2.ObjectRef,
    hyperparameters: dict | None = None,
) -> common_pb2.Job:
    """An SFT job on the tiny model, its request_id the run name; by default 300 steps of
    batch 8, long enough to act on mid-run."""
    values = {"max_steps": 300, "batch_size": 8, **(hyperparameters or {})}
    request = pb.TrainingRequest(
        request_id=run_name,
        run_name=run_name,
        objective="sft",
        base_model=str(model),
        datasets=[data],
        hyperparameters=struct(values),
    )
    return client.stub.SubmitTraining(request)


def test_kill_9_worker_resumes_training_from_the_latest_checkpoint(
    grpc_server, worker, slow_redelivery: Settings, tiny_model: Path
) -> None:
    store = ObjectStore(slow_redelivery)
    server = grpc_server("trainer", slow_redelivery)
    first = worker("trainer")
    data = upload(store, "datasets/count/1/data.jsonl", SFT_ROWS)
    with KilnClient("trainer", target=server.target) as client:
        hyperparameters = {"save_every": 20, "learning_rate": 1e-3}
        job = submit_sft(client, "killed", tiny_model, data, hyperparameters)

        def step() -> int:
            return client.jobs.GetJob(common_pb2.GetJobRequest(job_id=job.id)).progress.step

        wait_for(lambda: step() >= 25, 300, "the first checkpoint")  # generous on a busy machine
        os.killpg(os.getpgid(first), signal.SIGKILL)
        worker("trainer")
        final = watch(client, job.id, timeout=240)[-1]
    assert final.attempts == 2
    assert final.summary["resumed_from_step"] >= 20
    assert final.summary["resumed_from_step"] % 20 == 0
    steps = [c.step for c in list_checkpoints(store, "killed")]
    assert steps == list(range(20, 301, 20))


def test_cancel_stops_a_running_training_and_the_worker_takes_the_next_job(
    grpc_server, worker, slow_redelivery: Settings, tiny_model: Path
) -> None:
    store = ObjectStore(slow_redelivery)
    server = grpc_server("trainer", slow_redelivery)
    main = worker("trainer")
    data = upload(store, "datasets/count/1/data.jsonl", SFT_ROWS)
    with KilnClient("trainer", target=server.target) as client:
        job = submit_sft(client, "cancelled", tiny_model, data)

        def get(job_id: str) -> common_pb2.Job:
            return client.jobs.GetJob(common_pb2.GetJobRequest(job_id=job_id))

        wait_for(lambda: get(job.id).progress.step >= 3, 300, "three steps")
        client.jobs.CancelJob(common_pb2.CancelJobRequest(job_id=job.id))
        final = wait_for(
            lambda: (j := get(job.id)).state == common_pb2.JOB_STATE_CANCELLED and j, 10, "cancel"
        )
        canary = client.jobs.SubmitCanary(
            common_pb2.SubmitCanaryRequest(request_id="after-cancel", shards=2)
        )
        after = watch(client, canary.id, timeout=60)[-1]
    assert final.error_code == "CANCELLED" and 3 <= final.progress.step < 300
    assert after.state == common_pb2.JOB_STATE_SUCCEEDED and after.attempts == 1
    assert list_checkpoints(store, "cancelled") == [], "nothing committed"
    assert os.getpgid(main) == main, "the same worker took the next job"


def test_prepare_data_through_inference_and_the_cli(
    grpc_server, worker, kiln_env: Settings, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RISE, TATA and BMC data jobs call the inference service (the tiny model answers
    nonsense, so RISE finds no correct sample: the pipeline, not the model, is under test);
    then `kiln train run` trains on the BMC output."""
    from typer.testing import CliRunner

    from services.cli.main import app

    inference = grpc_server("inference", kiln_env)
    trainer = grpc_server("trainer", kiln_env)
    monkeypatch.setenv("KILN_INFERENCE_PORT", str(inference.port))
    monkeypatch.setenv("KILN_TRAINER_PORT", str(trainer.port))
    get_settings.cache_clear()
    worker("trainer")
    store = ObjectStore(kiln_env)
    with KilnClient("inference", target=inference.target) as client:
        client.stub.LoadModel(ipb.LoadModelRequest(name="tiny", local_path=str(tiny_model)))
    problems = [
        {
            "question": f"What is {i} + {i}?",
            "answer": f"#### {2 * i}",
            "cot": f"{i} + {i} = {2 * i}\n\\boxed{{{2 * i}}}",
            "tir": f"```python\nprint({i} + {i})\n```\n```output\n{2 * i}\n```\n\\boxed{{{2 * i}}}",
        }
        for i in range(4)
    ]
    problems_ref = upload(store, "datasets/math/1/data.jsonl", problems)
    pairs_ref = upload(store, "datasets/pairs/1/data.jsonl", PAIRS[:4])
    jobs = {
        "rise": (problems_ref, {"samples_per_problem": 2, "max_tokens": 8}),
        "tata": (problems_ref, {"anchors": 2, "max_tokens": 6}),
        "bmc": (pairs_ref, {"bridge_max_tokens": 8}),
    }
    results = {}
    with KilnClient("trainer", target=trainer.target) as client:
        for method, (ref, parameters) in jobs.items():
            job = client.stub.PrepareData(
                pb.PrepareDataRequest(
                    request_id=f"prep-{method}",
                    method=method,
                    model="tiny",
                    dataset=ref,
                    output_name=f"{method}-out",
                    parameters=struct(parameters),
                )
            )
            final = watch(client, job.id)[-1]
            prefix = f"datasets/{method}-out/{job.id}"
            assert store.is_committed(prefix)
            rows = store.get_jsonl(f"{prefix}/data.jsonl")
            results[method] = (rows, store.get_json(f"{prefix}/stats.json"), final)
    rise_rows, rise_stats, _ = results["rise"]
    assert rise_stats["samples"] == 8 and rise_stats["problems"] == 4
    assert len(rise_rows) == rise_stats["full_pairs"] + rise_stats["step_pairs"]
    tata_rows, tata_stats, _ = results["tata"]
    assert len(tata_stats["anchors"]) == 2
    assert len(tata_rows) == tata_stats["kept_cot"] + tata_stats["kept_tir"]
    assert 4 <= len(tata_rows) <= 8  # every problem keeps CoT, TIR or both
    bmc_rows, bmc_stats, _ = results["bmc"]
    assert bmc_stats["pairs"] == 4
    assert [r["original_chosen"] for r in bmc_rows] == [p["chosen"] for p in PAIRS[:4]][
        : len(bmc_rows)
    ]

    bmc_key = f"datasets/bmc-out/{results['bmc'][2].id}/data.jsonl"
    outcome = CliRunner().invoke(
        app,
        [
            "train",
            "run",
            "bmc_dpo",
            str(tiny_model),
            bmc_key,
            "--run",
            "cli-bmc",
            "--set",
            "max_steps=2",
            "--set",
            "bmc_delta=2",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    assert "checkpoints/cli-bmc/2" in outcome.output


@pytest.mark.parametrize("fsdp", [False, True], ids=["data-parallel", "fsdp"])
def test_two_process_run_resumes_and_its_job_matches(
    grpc_server, worker, kiln_env: Settings, tiny_model: Path, fsdp: bool
) -> None:
    """A 2-process gloo run (rank 0 here, rank 1 a `services.trainer.ranks` subprocess),
    data parallel or FSDP, crashed after its step-2 checkpoint and resumed ends where the
    uninterrupted run ends, and the same run submitted as a job (world_size=2 on the worker)
    writes the same adapter."""
    store = ObjectStore(kiln_env)
    values = {"max_steps": 4, "batch_size": 2, "save_every": 2, "learning_rate": 3e-3}
    values |= {"world_size": 2, "flat_lora_sigma": 0.1, "packing": True, "max_length": 128}
    values |= {"fsdp": fsdp}
    config = TrainConfig.from_hyperparameters("sft", values)
    train = trainer_run(store, config, tiny_model, kiln_env)
    train("ddp-straight")
    with pytest.raises(RuntimeError):
        train("ddp-crashy", crash_at=3)
    assert [c.step for c in list_checkpoints(store, "ddp-crashy")] == [2]
    train("ddp-crashy")
    assert list(store.list_keys("runs/ddp-crashy/ranks/")) == [], "specs removed, crash or not"
    straight = adapter_tensors(store, "checkpoints/ddp-straight/4")
    resumed = adapter_tensors(store, "checkpoints/ddp-crashy/4")
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], atol=1e-6, rtol=1e-5)

    trainer = grpc_server("trainer", kiln_env)
    worker("trainer")
    data = upload(store, "datasets/count/ddp/data.jsonl", SFT_ROWS)
    with KilnClient("trainer", target=trainer.target, settings=kiln_env) as client:
        job = submit_sft(client, "ddp-job", tiny_model, data, values)
        seen = watch(client, job.id, timeout=300)
    assert seen[-1].progress.metrics["peak_memory_mb"] > 0
    from_job = adapter_tensors(store, "checkpoints/ddp-job/4")
    assert list(store.list_keys(f"runs/{job.id}/ranks/")) == []
    for name in straight:
        torch.testing.assert_close(from_job[name], straight[name], atol=1e-6, rtol=1e-5)


def test_a_run_over_two_nodes_matches_the_run_on_one(
    grpc_server, worker, kiln_env: Settings, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nodes=2: rank 0's job sends a `kiln.trainer.node` task that another trainer worker takes
    (two workers stand for two machines; rank 0's address is loopback here), and the run's
    adapter equals the same run's on one node."""
    monkeypatch.setenv("KILN_TRAIN_MASTER_ADDR", "127.0.0.1")
    get_settings.cache_clear()
    settings = get_settings()
    store = ObjectStore(settings)
    values = {"max_steps": 3, "batch_size": 2, "learning_rate": 3e-3, "world_size": 2}
    trainer_run(store, TrainConfig.from_hyperparameters("sft", values), tiny_model, settings)(
        "one-node"
    )
    trainer = grpc_server("trainer", settings)
    worker("trainer")
    worker("trainer")
    data = upload(store, "datasets/count/nodes/data.jsonl", SFT_ROWS)
    with KilnClient("trainer", target=trainer.target, settings=settings) as client:
        job = submit_sft(client, "two-nodes", tiny_model, data, values | {"nodes": 2})
        final = watch(client, job.id, timeout=300)[-1]
    assert final.state == common_pb2.JOB_STATE_SUCCEEDED, final.error
    one = adapter_tensors(store, "checkpoints/one-node/3")
    two = adapter_tensors(store, "checkpoints/two-nodes/3")
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-6, rtol=1e-5)
