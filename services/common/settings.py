"""One settings object for every kiln process, read from `KILN_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("inference", "judge", "toolsynth", "trainer", "prober")
DEFAULT_PORTS = {name: 50051 + i for i, name in enumerate(SERVICES)}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KILN_", extra="ignore")

    home: Path = Field(Path.home() / ".kiln", description="state, caches and logs of kiln up")
    log_level: str = Field("INFO", description="root log level")
    log_json: bool = Field(True, description="JSON log lines (false: plain text)")

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker, results, jobs")

    s3_endpoint: str = Field("127.0.0.1:9000", description="host:port of the S3/MinIO endpoint")
    s3_access_key: str = Field("kiln", description="S3 access key")
    s3_secret_key: str = Field("kiln-secret", description="S3 secret key")
    s3_secure: bool = Field(False, description="https to the S3 endpoint")
    s3_region: str = Field("us-east-1", description="S3 region")
    bucket: str = Field("kiln", description="bucket for datasets, checkpoints and runs")
    s3_retries: int = Field(4, description="attempts per object-store call before UNAVAILABLE")

    grpc_host: str = Field("127.0.0.1", description="address servers bind and clients dial")
    bind_host: str = Field("", description="address servers bind; empty: grpc_host")
    inference_host: str = Field("", description="host clients dial for inference; empty: grpc_host")
    judge_host: str = ""
    toolsynth_host: str = ""
    trainer_host: str = ""
    prober_host: str = ""
    inference_port: int = DEFAULT_PORTS["inference"]
    judge_port: int = DEFAULT_PORTS["judge"]
    toolsynth_port: int = DEFAULT_PORTS["toolsynth"]
    trainer_port: int = DEFAULT_PORTS["trainer"]
    prober_port: int = DEFAULT_PORTS["prober"]
    max_message_bytes: int = Field(64 * 1024 * 1024, description="gRPC message cap")
    shutdown_grace_s: float = Field(10.0, description="drain time after SIGTERM")
    deadline_s: float = Field(60.0, description="client default deadline per call")
    metrics_port: int = Field(0, description="Prometheus /metrics HTTP port; 0: off")
    http_port: int = Field(8000, description="port of the OpenAI-compatible HTTP API")

    auth_token: str = Field("", description="bearer token every RPC but health must carry")
    tls_cert: Path | None = Field(None, description="server certificate (PEM); enables TLS")
    tls_key: Path | None = Field(None, description="server private key (PEM)")
    tls_ca: Path | None = Field(
        None,
        description="CA (PEM): clients verify with it; servers "
        "given it require client certificates (mTLS)",
    )
    tls_client_cert: Path | None = Field(None, description="client certificate for mTLS")
    tls_client_key: Path | None = Field(None, description="client key for mTLS")

    task_time_limit_s: int = Field(6 * 3600, description="hard limit of the longest task")
    visibility_timeout_s: int = Field(0, description="Redis redelivery timeout; 0: limit + 10%")
    redis_outage_s: float = Field(
        300.0, description="how long a worker waits for Redis to come back to record a job's end"
    )
    worker_concurrency: int = Field(1, description="prefork children per worker")
    job_heartbeat_s: float = Field(
        2.0, gt=0, description="how often a running job's worker records it is alive"
    )
    job_lost_after_s: float = Field(
        30.0,
        gt=0,
        description="a RUNNING job without a heartbeat for this long has lost its worker: "
        "its server requeues it",
    )
    job_max_attempts: int = Field(
        3, ge=1, description="deliveries of a job before a lost worker makes it FAILED"
    )
    cancel_grace_s: float = Field(
        5.0,
        ge=0,
        description="after CancelJob, how long a running job may take to stop at its next "
        "progress report before its worker process is killed",
    )
    worker_memory_mb: int = Field(
        -1,
        ge=-1,
        description="address-space cap of each worker child (MiB): a job past it FAILS with "
        "RESOURCE_EXHAUSTED; -1: half of physical memory, 0: no cap",
    )

    max_input_bytes: int = Field(
        1 << 30,
        gt=0,
        description="largest input object (dataset, prompts) a job takes; checked at submit",
    )
    max_tools: int = Field(
        10_000,
        gt=0,
        description="tools a toolsynth job takes (its tool graph grows with their square)",
    )
    max_tools_bytes: int = Field(
        16 << 20, gt=0, description="largest tools file a toolsynth job takes"
    )
    max_concurrent_generations: int = Field(
        0,
        description="slots for Score, vLLM and tool-use generations per server; "
        "0: 8 on a GPU, else one per 4 CPU cores",
    )
    decode_batch: int = Field(
        16, ge=1, description="sequences the hf engine decodes together (continuous batching)"
    )
    max_waiting_generations: int = Field(
        64,
        ge=0,
        description="calls that may wait for a decoding slot per hf model, and for a Score, "
        "vLLM or tool-use slot per server; beyond, RESOURCE_EXHAUSTED at once",
    )
    max_concurrent_judgments: int = Field(
        4, ge=1, description="Judge calls a judge server runs at once"
    )
    max_waiting_judgments: int = Field(
        64, ge=0, description="Judge calls that may wait; beyond, RESOURCE_EXHAUSTED at once"
    )
    device: str = Field("", description="torch device of hf models; empty: cuda if available")
    vllm_kv_cache_bytes: int = Field(
        1 << 30, gt=0, description="KV memory a vllm-engine model reserves (CPU RAM or GPU memory)"
    )
    train_devices: int = Field(
        1, ge=1, le=64, description="processes of a training run when the request sets none"
    )
    train_nodes: int = Field(
        1, ge=1, le=64, description="nodes of a training run when the request sets none"
    )
    train_master_addr: str = Field(
        "",
        description="address every rank of a training run reaches rank 0 at; empty: loopback "
        "for one node, this host's address for several",
    )
    torch_threads: int = Field(
        0,
        ge=0,
        description="CPU threads per server or worker process for torch; 0: torch's default",
    )
    models_dir: Path | None = Field(
        None, description="folder of named models loaded on first use; default <home>/models"
    )
    openai_base_url: str = Field("", description="OpenAI-compatible endpoint of the openai backend")
    openai_api_key: str = Field("", description="its API key")
    cache_dir: Path | None = Field(None, description="download cache; default <home>/cache")

    def port(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))

    @property
    def listen_host(self) -> str:
        """The address servers bind: KILN_BIND_HOST, else KILN_GRPC_HOST."""
        return self.bind_host or self.grpc_host

    def host(self, service: str) -> str:
        """Where clients dial a service: KILN_<SERVICE>_HOST, else KILN_GRPC_HOST."""
        return str(getattr(self, f"{service}_host")) or self.grpc_host

    def target(self, service: str) -> str:
        return f"{self.host(service)}:{self.port(service)}"

    @property
    def effective_visibility_timeout_s(self) -> int:
        if self.visibility_timeout_s > 0:
            return self.visibility_timeout_s
        return int(self.task_time_limit_s * 1.1) + 60

    @property
    def effective_models_dir(self) -> Path:
        return self.models_dir or self.home / "models"

    @property
    def effective_cache_dir(self) -> Path:
        return self.cache_dir or self.home / "cache"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests that change the environment call cache_clear()."""
    return Settings()
