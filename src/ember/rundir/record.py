"""summary.json: a run's status and final facts, written only by RunRecord's transitions."""

import json
import os
import platform
import socket
import time
from pathlib import Path
from typing import ClassVar

import torch

import ember
from ember.errors import CheckpointError
from ember.files import write_atomic


class RunRecord:
    """A run's summary.json, and the only code that writes it (atomically, inside the run
    directory). Each change of the run's status is one transition, checked against the status the
    file holds: a run is started (or resumed), then finished, failed, preempted or pruned; a
    finished run may be annotated. Each returns what it wrote. The keys are those `ember runs`,
    the report, tune and the trackers read."""

    NAME = "summary.json"
    # transition -> the statuses it may follow; None: no summary.json yet
    FOLLOWS: ClassVar[dict[str, tuple]] = {
        "started": (None,),
        # a killed process left "running"; resuming a finished run tests its final weights again
        "resumed": (None, "running", "failed", "interrupted", "preempted", "pruned", "finished"),
        "finished": ("running",),
        # the last three: tune restates a trial its lost worker left (and queues it again)
        "failed": ("running", "failed", "interrupted", "preempted"),
        "preempted": ("running",),
        "pruned": ("running", "failed"),  # the pruner's exception ended the loop, which recorded a failure
        "annotated": ("finished",),
        "derived": (None,),
    }

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / self.NAME

    def read(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def status(self) -> str | None:
        """The recorded status; None while there is no summary.json."""
        return self.read().get("status") if self.path.exists() else None

    # -- transitions --
    def started(self) -> dict:
        """A new run: running, with when, who (process and host) and where (the environment)."""
        summary = {"status": "running", "started": time.time(), **_process(), "environment": environment()}
        return self._write("started", summary)

    def resumed(self) -> dict:
        """Training continues from a checkpoint, in this process."""
        return self._write("resumed", {**self.read(), "status": "running", **_process()})

    def finished(self, facts: dict) -> dict:
        """Training ended and was tested: `facts` are the run's metrics, baselines and timings."""
        return self._write("finished", {**self.read(), **facts, "status": "finished"})

    def failed(self, error: BaseException | str, facts: dict | None = None) -> dict:
        """An exception ended the run (Ctrl-C: "interrupted"); `error` a text is written as is."""
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
        return self._write("failed", {**self.read(), **(facts or {}), "status": status, "error": text})

    def preempted(self, steps: int, checkpoint: Path | None, facts: dict | None = None) -> dict:
        """A stop signal ended training after `steps` steps; `checkpoint` continues it."""
        summary = {**self.read(), **(facts or {}), "status": "preempted", "steps": steps, "checkpoint": str(checkpoint)}
        return self._write("preempted", summary)

    def pruned(self, reason: str, validations: int) -> dict:
        """A tuner stopped the trial early: not a failure, so the loop's error is dropped."""
        summary = self.read()
        summary.pop("error", None)
        return self._write("pruned", {**summary, "status": "pruned", "pruned": reason, "validations": validations})

    def annotated(self, key: str, value) -> dict:
        """One more fact about a recorded run (ember compress: how the model was compressed)."""
        return self._write("annotated", {**self.read(), key: value})

    def derived(self, facts: dict) -> dict:
        """A run made whole from another without training (ember compress method=dynamic_int8):
        finished from its first record."""
        return self._write("derived", {"status": "finished", **facts})

    def _write(self, transition: str, summary: dict) -> dict:
        before = self.status()
        if before not in self.FOLLOWS[transition]:
            was = f"says the run is {before}" if before else "is missing"
            follows = " or ".join(s or "a new run" for s in self.FOLLOWS[transition])
            raise CheckpointError(
                f"cannot record {str(self.directory)!r} as {transition}: its {self.NAME} {was} ({transition} follows"
                f" {follows}); another process or an edit changed it: train the run again, or resume it"
            )
        write_atomic(self.path, json.dumps(summary, indent=2) + "\n", within=self.directory)
        return summary


def _process() -> dict:
    """Who writes the run, so `ember runs` can tell a live run from one whose process died."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def environment() -> dict:
    env = {
        "ember": ember.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    if torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return env
