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
    # Regression targets standardized per channel (data.normalize_target): the model trains in
    # these units and everything a user sees is multiplied back. None: targets as they are.
    target_mean: list[float] | None = None
    target_std: list[float] | None = None
    input_names: list[str] | None = None  # a name per input channel (variables of a field)
    target_names: list[str] | None = None  # a name per target channel (variables, columns)
    target_units: list[str] | None = None
    # Input channel of each target channel where the targets are the inputs' own variables on
    # the same grid (bias correction, forecasting): the identity (persistence, with `lead`)
    # baseline and residual learning. None where targets are other quantities.
    identity_channels: list[int] | None = None
    lead: int = 0  # time steps between input and target (forecasting)
    # Tables: how raw columns become the input vector ({"columns": [...], "categories": {column:
    # [values in one-hot order]}}), so `ember predict` needs only the run.
    encoding: dict | None = None
    lat: list[float] | None = None  # the grid's latitudes (second-to-last target axis), for weighting and maps
    lon: list[float] | None = None
    # Masks: flat indices into one target (input) sample that are missing at every train time
    # (land in a sea-surface field). They leave the loss and the metrics; predictions and
    # exports hold NaN there. mask_channel: the input mask is one more input channel.
    mask: list[int] | None = None
    input_mask: list[int] | None = None
    mask_channel: bool = False
    calendar: str | None = None  # the time coordinate's CF calendar (standard, 360_day, noleap, ...)
    time_units: str | None = None

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

    @property
    def target_channels(self) -> int:
        """Channels of a target batch (dimension 1; a batch of scalars is one channel)."""
        return int(self.target_shape[0]) if self.target_shape else 1

    def target_name(self, c: int) -> str:
        return self.target_names[c] if self.target_names and c < len(self.target_names) else str(c)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        # Specs written before a field existed take its default (older runs still load).
        return cls(**d)
