"""The inference service loads committed checkpoints (model or LoRA adapter) from S3."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import pytest

from kiln.inference.v1 import inference_pb2 as pb
from services.common.clients import KilnClient
from services.common.objectstore import ObjectStore
from services.common.settings import Settings


def test_load_checkpoints(
    grpc_server, kiln_env: Settings, tiny_model: Path, tiny_adapter: Path
) -> None:
    store = ObjectStore(kiln_env)
    store.upload_folder("checkpoints/tiny/0", tiny_model, {"step": 0})
    store.upload_folder("checkpoints/tiny-lora/10", tiny_adapter, {"step": 10})
    server = grpc_server("inference", kiln_env)
    with KilnClient("inference", target=server.target) as client:
        info = client.stub.LoadModel(
            pb.LoadModelRequest(name="ckpt", checkpoint="checkpoints/tiny/0")
        )
        assert info.source == f"s3://{kiln_env.bucket}/checkpoints/tiny/0"
        assert info.parameters == 426_624
        tuned = client.stub.LoadModel(
            pb.LoadModelRequest(
                name="tuned", checkpoint="checkpoints/tiny/0", adapters=["checkpoints/tiny-lora/10"]
            )
        )
        assert len(tuned.adapters) == 1
        done = list(
            client.stub.Generate(
                pb.GenerateRequest(
                    request_id="g",
                    model="tuned",
                    prompt="hello",
                    sampling=pb.SamplingParams(max_tokens=4),
                ),
                timeout=60,
            )
        )[-1].complete
        assert done.usage.completion_tokens == 4

        store.put_bytes("checkpoints/half/1/config.json", b"{}")  # never committed
        with pytest.raises(grpc.RpcError) as err:
            client.stub.LoadModel(pb.LoadModelRequest(name="h", checkpoint="checkpoints/half/1"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        key = "checkpoints/tiny/0/config.json"
        ref = store.stat(key)
        store.client.put_object(
            store.bucket, key, io.BytesIO(b"{}"), 2, metadata={"sha256": ref.sha256}
        )
        kiln_env.effective_cache_dir.joinpath(key).unlink()  # force a fresh download
        with pytest.raises(grpc.RpcError) as err:
            client.stub.LoadModel(pb.LoadModelRequest(name="bad", checkpoint="checkpoints/tiny/0"))
        assert err.value.code() == grpc.StatusCode.DATA_LOSS
