"""The `remote` backend: the kiln inference service over gRPC."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from services.common.errors import Unavailable
from services.llm.base import Completion, Prompt, SamplingParams, TokenScores, validate_prompt
from services.llm.scripted import render_plain

if TYPE_CHECKING:
    from services.common.settings import Settings


def prompt_fields(prompt: Prompt) -> dict[str, Any]:
    """The `prompt`/`messages` oneof of GenerateRequest and ScoreItem."""
    from kiln.inference.v1 import inference_pb2 as pb

    if isinstance(prompt, str):
        return {"prompt": prompt}
    return {
        "messages": pb.Messages(
            messages=[pb.ChatMessage(role=m["role"], content=m["content"]) for m in prompt]
        )
    }


def sampling_to_pb(params: SamplingParams) -> Any:
    from kiln.inference.v1 import inference_pb2 as pb

    fields: dict[str, Any] = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "stop": list(params.stop),
        "return_logprobs": params.logprobs,
    }
    if params.seed is not None:
        fields["seed"] = params.seed
    return pb.SamplingParams(**fields)


@contextmanager
def _downstream() -> Iterator[None]:
    """The inference service's failures as kiln errors (see downstream_error)."""
    import grpc

    from services.common.clients import downstream_error

    try:
        yield
    except grpc.RpcError as exc:
        raise downstream_error(exc, "inference") from exc


class RemoteBackend:
    """Sends each prompt as a streaming Generate call (concurrently, up to `parallelism`) and
    each score batch as one Score call to the model named `model` on the inference server."""

    name = "remote"

    def __init__(
        self,
        model: str,
        target: str | None = None,
        parallelism: int = 16,
        client: Any = None,
        kv: Any = None,
        tools: Any = None,
        settings: Settings | None = None,
    ) -> None:
        from services.common.clients import KilnClient

        self.model = model
        self.client = client or KilnClient("inference", target=target, settings=settings)
        self.parallelism = parallelism
        self.kv = kv  # optional inference_pb2.KVCompression for every request
        self.tools = tools  # optional inference_pb2.ToolUse: tool-integrated generation

    @property
    def fingerprint(self) -> str:
        rounds = f":tools{self.tools.max_rounds}" if self.tools else ""
        return f"remote:{self.client.target}:{self.model}{rounds}"

    def render(self, prompt: Prompt) -> str:
        # The server applies the model's chat template; this key only has to be unique.
        return render_plain(prompt)

    def _generate_one(self, prompt: Prompt, params: SamplingParams) -> Completion:
        import uuid

        from kiln.inference.v1 import inference_pb2 as pb

        request = pb.GenerateRequest(
            request_id=uuid.uuid4().hex,
            model=self.model,
            sampling=sampling_to_pb(params),
            kv=self.kv,
            tools=self.tools,
            **prompt_fields(validate_prompt(prompt)),
        )
        done = None
        with _downstream():
            # read the stream to its end: leaving at the complete message would cancel a call
            # that succeeded (the server would count and log it CANCELLED)
            for response in self.client.stub.Generate(request):
                if response.WhichOneof("kind") == "complete":
                    done = response.complete
        if done is None:
            raise Unavailable("inference: the Generate stream ended without a complete message")
        return Completion(
            done.text,
            list(done.token_ids),
            done.finish_reason,
            int(done.usage.prompt_tokens),
            list(done.logprobs) if params.logprobs else None,
        )

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        params.validate()
        if len(prompts) <= 1:
            return [self._generate_one(p, params) for p in prompts]
        with ThreadPoolExecutor(min(self.parallelism, len(prompts))) as pool:
            return list(pool.map(lambda p: self._generate_one(p, params), prompts))

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[TokenScores]:
        import uuid

        from kiln.inference.v1 import inference_pb2 as pb

        items = [
            pb.ScoreItem(continuation=c, **prompt_fields(validate_prompt(p)))
            for p, c in zip(prompts, continuations, strict=True)
        ]
        if not items:
            return []
        with _downstream():
            reply = self.client.stub.Score(
                pb.ScoreRequest(request_id=uuid.uuid4().hex, model=self.model, items=items)
            )
        return [TokenScores(list(r.token_ids), list(r.logprobs)) for r in reply.results]
