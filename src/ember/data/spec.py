"""DataSpec: the one handshake between data and models."""

import math
from dataclasses import asdict, dataclass

TASKS = ("classification", "regression")


@dataclass(kw_only=True)
class DataSpec:
    input_shape: tuple[int, ...]  # one sample, without the batch dimension
    task: str  # classification | regression
    num_classes: int | None = None  # classification
    target_shape: tuple[int, ...] = ()  # regression: one sample's target shape
    class_names: list[str] | None = None
    mean: list[float] | None = None  # per input channel, from the train split
    std: list[float] | None = None

    def __post_init__(self):
        self.input_shape = tuple(self.input_shape)
        self.target_shape = tuple(self.target_shape)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")

    @property
    def in_features(self) -> int:
        return math.prod(self.input_shape)

    @property
    def out_features(self) -> int:
        """Width of a model's output layer: classes, or the flattened target."""
        if self.task == "classification":
            return int(self.num_classes)
        return max(1, math.prod(self.target_shape))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        return cls(**d)
