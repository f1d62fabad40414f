from google.protobuf import struct_pb2 as _struct_pb2
from kiln.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SynthesisRequest(_message.Message):
    __slots__ = ("request_id", "count", "seed", "dialog_mix", "tools", "model", "dataset_name", "parameters", "benchmark_tools", "backend", "export_format")
    class DialogMixEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DIALOG_MIX_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    BENCHMARK_TOOLS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    EXPORT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    count: int
    seed: int
    dialog_mix: _containers.ScalarMap[str, float]
    tools: _common_pb2.ObjectRef
    model: str
    dataset_name: str
    parameters: _struct_pb2.Struct
    benchmark_tools: _common_pb2.ObjectRef
    backend: str
    export_format: str
    def __init__(self, request_id: _Optional[str] = ..., count: _Optional[int] = ..., seed: _Optional[int] = ..., dialog_mix: _Optional[_Mapping[str, float]] = ..., tools: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., model: _Optional[str] = ..., dataset_name: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., benchmark_tools: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., backend: _Optional[str] = ..., export_format: _Optional[str] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("functions_json", "answer_json", "calls", "category")
    FUNCTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    ANSWER_JSON_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    functions_json: str
    answer_json: str
    calls: str
    category: str
    def __init__(self, functions_json: _Optional[str] = ..., answer_json: _Optional[str] = ..., calls: _Optional[str] = ..., category: _Optional[str] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("valid", "errors", "detail")
    VALID_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    errors: _containers.RepeatedScalarFieldContainer[str]
    detail: str
    def __init__(self, valid: _Optional[bool] = ..., errors: _Optional[_Iterable[str]] = ..., detail: _Optional[str] = ...) -> None: ...
