from google.protobuf import struct_pb2 as _struct_pb2
from kiln.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainingRequest(_message.Message):
    __slots__ = ("request_id", "run_name", "objective", "base_model", "datasets", "hyperparameters")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_NAME_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    run_name: str
    objective: str
    base_model: str
    datasets: _containers.RepeatedCompositeFieldContainer[_common_pb2.ObjectRef]
    hyperparameters: _struct_pb2.Struct
    def __init__(self, request_id: _Optional[str] = ..., run_name: _Optional[str] = ..., objective: _Optional[str] = ..., base_model: _Optional[str] = ..., datasets: _Optional[_Iterable[_Union[_common_pb2.ObjectRef, _Mapping]]] = ..., hyperparameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class PrepareDataRequest(_message.Message):
    __slots__ = ("request_id", "method", "model", "dataset", "output_name", "parameters")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    method: str
    model: str
    dataset: _common_pb2.ObjectRef
    output_name: str
    parameters: _struct_pb2.Struct
    def __init__(self, request_id: _Optional[str] = ..., method: _Optional[str] = ..., model: _Optional[str] = ..., dataset: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., output_name: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListCheckpointsRequest(_message.Message):
    __slots__ = ("run_name",)
    RUN_NAME_FIELD_NUMBER: _ClassVar[int]
    run_name: str
    def __init__(self, run_name: _Optional[str] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("run_name", "step", "prefix", "manifest", "objective", "merged")
    RUN_NAME_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    MERGED_FIELD_NUMBER: _ClassVar[int]
    run_name: str
    step: int
    prefix: str
    manifest: _common_pb2.ObjectRef
    objective: str
    merged: bool
    def __init__(self, run_name: _Optional[str] = ..., step: _Optional[int] = ..., prefix: _Optional[str] = ..., manifest: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., objective: _Optional[str] = ..., merged: _Optional[bool] = ...) -> None: ...

class ListCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints",)
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[Checkpoint]
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[Checkpoint, _Mapping]]] = ...) -> None: ...
