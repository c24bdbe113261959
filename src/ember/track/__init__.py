"""Where metrics go. Every logger takes the same records: dicts with `step`, `epoch`, `split`
and metric values. `metrics.jsonl` is always written and is the source of truth for ember's
own commands; others are optional.
"""

import json
import math
from pathlib import Path


class JsonlLogger:
    """One JSON object per line, flushed per record so a killed run keeps what it logged."""

    def __init__(self, path: Path):
        self._file = open(path, "a", encoding="utf-8")

    def log(self, record: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardLogger:
    def __init__(self, path: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: on resume, TensorBoard hides what the killed run logged after its checkpoint.
        self._writer = SummaryWriter(log_dir=str(path), purge_step=purge_step)

    def log(self, record: dict) -> None:
        split = record.get("split", "train")
        for key, value in record.items():
            if key not in ("step", "epoch", "split") and isinstance(value, (int, float)):
                self._writer.add_scalar(f"{split}/{key}", value, record["step"])

    def close(self) -> None:
        self._writer.close()


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True
