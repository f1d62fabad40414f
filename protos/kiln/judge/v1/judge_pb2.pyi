from kiln.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JudgeConfig(_message.Message):
    __slots__ = ("strategy", "model", "backend", "k", "both_orders", "combine")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    BOTH_ORDERS_FIELD_NUMBER: _ClassVar[int]
    COMBINE_FIELD_NUMBER: _ClassVar[int]
    strategy: str
    model: str
    backend: str
    k: int
    both_orders: bool
    combine: str
    def __init__(self, strategy: _Optional[str] = ..., model: _Optional[str] = ..., backend: _Optional[str] = ..., k: _Optional[int] = ..., both_orders: _Optional[bool] = ..., combine: _Optional[str] = ...) -> None: ...

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

class JudgeResponse(_message.Message):
    __slots__ = ("verdict", "raw_judgments", "usage")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    RAW_JUDGMENTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    verdict: str
    raw_judgments: _containers.RepeatedScalarFieldContainer[str]
    usage: _common_pb2.Usage
    def __init__(self, verdict: _Optional[str] = ..., raw_judgments: _Optional[_Iterable[str]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ...) -> None: ...

class EvaluationRequest(_message.Message):
    __slots__ = ("request_id", "dataset", "format", "config")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    dataset: _common_pb2.ObjectRef
    format: str
    config: JudgeConfig
    def __init__(self, request_id: _Optional[str] = ..., dataset: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., format: _Optional[str] = ..., config: _Optional[_Union[JudgeConfig, _Mapping]] = ...) -> None: ...

class CrowdSamplingRequest(_message.Message):
    __slots__ = ("request_id", "prompts", "policies", "config", "dataset_name")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    DATASET_NAME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    prompts: _common_pb2.ObjectRef
    policies: _containers.RepeatedScalarFieldContainer[str]
    config: JudgeConfig
    dataset_name: str
    def __init__(self, request_id: _Optional[str] = ..., prompts: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., policies: _Optional[_Iterable[str]] = ..., config: _Optional[_Union[JudgeConfig, _Mapping]] = ..., dataset_name: _Optional[str] = ...) -> None: ...
