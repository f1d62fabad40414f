from kiln.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProbeItem(_message.Message):
    __slots__ = ("question", "options", "reasoning", "gold")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    GOLD_FIELD_NUMBER: _ClassVar[int]
    question: str
    options: _containers.RepeatedScalarFieldContainer[str]
    reasoning: str
    gold: str
    def __init__(self, question: _Optional[str] = ..., options: _Optional[_Iterable[str]] = ..., reasoning: _Optional[str] = ..., gold: _Optional[str] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("request_id", "model", "item", "step_mode", "raw_prompt")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    STEP_MODE_FIELD_NUMBER: _ClassVar[int]
    RAW_PROMPT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    item: ProbeItem
    step_mode: str
    raw_prompt: bool
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., item: _Optional[_Union[ProbeItem, _Mapping]] = ..., step_mode: _Optional[str] = ..., raw_prompt: _Optional[bool] = ...) -> None: ...

class ProbeStep(_message.Message):
    __slots__ = ("step", "answer", "confidence", "option_probs")
    class OptionProbsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STEP_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    OPTION_PROBS_FIELD_NUMBER: _ClassVar[int]
    step: int
    answer: str
    confidence: float
    option_probs: _containers.ScalarMap[str, float]
    def __init__(self, step: _Optional[int] = ..., answer: _Optional[str] = ..., confidence: _Optional[float] = ..., option_probs: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Trajectory(_message.Message):
    __slots__ = ("steps", "early_answer", "mind_changes", "change_positions", "final_answer", "final_confidence", "graded", "correct", "unstable")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    EARLY_ANSWER_FIELD_NUMBER: _ClassVar[int]
    MIND_CHANGES_FIELD_NUMBER: _ClassVar[int]
    CHANGE_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    FINAL_ANSWER_FIELD_NUMBER: _ClassVar[int]
    FINAL_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    GRADED_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    UNSTABLE_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[ProbeStep]
    early_answer: bool
    mind_changes: int
    change_positions: _containers.RepeatedScalarFieldContainer[int]
    final_answer: str
    final_confidence: _containers.RepeatedScalarFieldContainer[float]
    graded: bool
    correct: bool
    unstable: bool
    def __init__(self, steps: _Optional[_Iterable[_Union[ProbeStep, _Mapping]]] = ..., early_answer: _Optional[bool] = ..., mind_changes: _Optional[int] = ..., change_positions: _Optional[_Iterable[int]] = ..., final_answer: _Optional[str] = ..., final_confidence: _Optional[_Iterable[float]] = ..., graded: _Optional[bool] = ..., correct: _Optional[bool] = ..., unstable: _Optional[bool] = ...) -> None: ...

class ProbeResponse(_message.Message):
    __slots__ = ("trajectory", "usage")
    TRAJECTORY_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    trajectory: Trajectory
    usage: _common_pb2.Usage
    def __init__(self, trajectory: _Optional[_Union[Trajectory, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ...) -> None: ...

class SubmitProbeRequest(_message.Message):
    __slots__ = ("request_id", "model", "dataset", "step_mode", "raw_prompt")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    STEP_MODE_FIELD_NUMBER: _ClassVar[int]
    RAW_PROMPT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    dataset: _common_pb2.ObjectRef
    step_mode: str
    raw_prompt: bool
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., dataset: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., step_mode: _Optional[str] = ..., raw_prompt: _Optional[bool] = ...) -> None: ...

class SelectRequest(_message.Message):
    __slots__ = ("request_id", "model", "question", "options", "candidates", "scorer", "step_mode", "resample_rounds", "resample_temperature", "raw_prompt")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    STEP_MODE_FIELD_NUMBER: _ClassVar[int]
    RESAMPLE_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    RESAMPLE_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    RAW_PROMPT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    question: str
    options: _containers.RepeatedScalarFieldContainer[str]
    candidates: _containers.RepeatedScalarFieldContainer[str]
    scorer: str
    step_mode: str
    resample_rounds: int
    resample_temperature: float
    raw_prompt: bool
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., question: _Optional[str] = ..., options: _Optional[_Iterable[str]] = ..., candidates: _Optional[_Iterable[str]] = ..., scorer: _Optional[str] = ..., step_mode: _Optional[str] = ..., resample_rounds: _Optional[int] = ..., resample_temperature: _Optional[float] = ..., raw_prompt: _Optional[bool] = ...) -> None: ...

class RankedCandidate(_message.Message):
    __slots__ = ("index", "answer", "score")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    index: int
    answer: str
    score: float
    def __init__(self, index: _Optional[int] = ..., answer: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class SelectResponse(_message.Message):
    __slots__ = ("ranked", "majority_answer", "trajectories", "chains", "resampled")
    RANKED_FIELD_NUMBER: _ClassVar[int]
    MAJORITY_ANSWER_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORIES_FIELD_NUMBER: _ClassVar[int]
    CHAINS_FIELD_NUMBER: _ClassVar[int]
    RESAMPLED_FIELD_NUMBER: _ClassVar[int]
    ranked: _containers.RepeatedCompositeFieldContainer[RankedCandidate]
    majority_answer: str
    trajectories: _containers.RepeatedCompositeFieldContainer[Trajectory]
    chains: _containers.RepeatedScalarFieldContainer[str]
    resampled: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ranked: _Optional[_Iterable[_Union[RankedCandidate, _Mapping]]] = ..., majority_answer: _Optional[str] = ..., trajectories: _Optional[_Iterable[_Union[Trajectory, _Mapping]]] = ..., chains: _Optional[_Iterable[str]] = ..., resampled: _Optional[_Iterable[int]] = ...) -> None: ...
