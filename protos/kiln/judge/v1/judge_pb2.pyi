from google.protobuf import struct_pb2 as _struct_pb2
from kiln.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JudgeConfig(_message.Message):
    __slots__ = ("strategy", "model", "backend", "k", "single_order", "combine", "verdict_format", "max_tokens", "seed", "max_calls", "parameters")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    SINGLE_ORDER_FIELD_NUMBER: _ClassVar[int]
    COMBINE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_CALLS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    strategy: str
    model: str
    backend: str
    k: int
    single_order: bool
    combine: str
    verdict_format: str
    max_tokens: int
    seed: int
    max_calls: int
    parameters: _struct_pb2.Struct
    def __init__(self, strategy: _Optional[str] = ..., model: _Optional[str] = ..., backend: _Optional[str] = ..., k: _Optional[int] = ..., single_order: _Optional[bool] = ..., combine: _Optional[str] = ..., verdict_format: _Optional[str] = ..., max_tokens: _Optional[int] = ..., seed: _Optional[int] = ..., max_calls: _Optional[int] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class JudgeRequest(_message.Message):
    __slots__ = ("request_id", "instruction", "response_a", "response_b", "config")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_A_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_B_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instruction: str
    response_a: str
    response_b: str
    config: JudgeConfig
    def __init__(self, request_id: _Optional[str] = ..., instruction: _Optional[str] = ..., response_a: _Optional[str] = ..., response_b: _Optional[str] = ..., config: _Optional[_Union[JudgeConfig, _Mapping]] = ...) -> None: ...

class OrderJudgment(_message.Message):
    __slots__ = ("winner", "text", "details")
    WINNER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    winner: str
    text: str
    details: _struct_pb2.Struct
    def __init__(self, winner: _Optional[str] = ..., text: _Optional[str] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class JudgeResponse(_message.Message):
    __slots__ = ("verdict", "forward", "swapped", "usage", "usage_by_stage")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    FORWARD_FIELD_NUMBER: _ClassVar[int]
    SWAPPED_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    USAGE_BY_STAGE_FIELD_NUMBER: _ClassVar[int]
    verdict: str
    forward: OrderJudgment
    swapped: OrderJudgment
    usage: _common_pb2.Usage
    usage_by_stage: _struct_pb2.Struct
    def __init__(self, verdict: _Optional[str] = ..., forward: _Optional[_Union[OrderJudgment, _Mapping]] = ..., swapped: _Optional[_Union[OrderJudgment, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., usage_by_stage: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class EvaluationRequest(_message.Message):
    __slots__ = ("request_id", "dataset", "config", "limit", "distill", "batch_size")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    DISTILL_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    dataset: _common_pb2.ObjectRef
    config: JudgeConfig
    limit: int
    distill: bool
    batch_size: int
    def __init__(self, request_id: _Optional[str] = ..., dataset: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., config: _Optional[_Union[JudgeConfig, _Mapping]] = ..., limit: _Optional[int] = ..., distill: _Optional[bool] = ..., batch_size: _Optional[int] = ...) -> None: ...

class EvaluationEstimate(_message.Message):
    __slots__ = ("items", "calls", "calls_by_stage", "within_budget")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    CALLS_BY_STAGE_FIELD_NUMBER: _ClassVar[int]
    WITHIN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    items: int
    calls: int
    calls_by_stage: _struct_pb2.Struct
    within_budget: bool
    def __init__(self, items: _Optional[int] = ..., calls: _Optional[int] = ..., calls_by_stage: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., within_budget: _Optional[bool] = ...) -> None: ...

class CrowdSamplingRequest(_message.Message):
    __slots__ = ("request_id", "prompts", "policies", "config", "dataset_name", "max_tokens", "temperature")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    DATASET_NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    prompts: _common_pb2.ObjectRef
    policies: _containers.RepeatedScalarFieldContainer[str]
    config: JudgeConfig
    dataset_name: str
    max_tokens: int
    temperature: float
    def __init__(self, request_id: _Optional[str] = ..., prompts: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., policies: _Optional[_Iterable[str]] = ..., config: _Optional[_Union[JudgeConfig, _Mapping]] = ..., dataset_name: _Optional[str] = ..., max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ...) -> None: ...
