"""Step checkpoints of `trainer.strategy=fsdp` runs, in torch.distributed.checkpoint (DCP) format.

    checkpoints/step-<N>.dcp/   every rank's shards of the model and optimizer (DCP files and
                                .metadata) plus trainer.pt: rank 0's counters, schedules, RNG
                                and data position, the same on every rank
    checkpoints/best.pt         the gathered whole model, as in any other run, so eval, export,
    checkpoints/last.pt         report and model.init read them unchanged (last.pt: at the end)

DCP reshards on load, so a run saved by 4 processes resumes on 2 or on 1. A directory is
written under a temporary name and renamed by rank 0 once every rank's shards and trainer.pt
are on disk: a killed job leaves the previous checkpoint as the newest complete one.

DCP itself reads `.metadata` with plain pickle and the non-tensor values (optimizer settings) with
`torch.load(weights_only=False)`: either runs any code a crafted file names. ember loads through
_SafeReader (which reads .metadata with ember.safe_pickle) and _SafePlanner (which loads each value
with weights_only=True before DCP loads it), so nothing foreign is called.
"""

import io
import os
import pickle
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from ember import safe_pickle
from ember.errors import CheckpointError, EmberError, UnsafeFileError
from ember.files import fsync_dir, load_checkpoint, save_checkpoint
from ember.train import distributed
from ember.train.distributed import Dist
from ember.train.strategy import full_state_dict, sync_buffers

EXTRAS = "trainer.pt"  # everything but the sharded weights and optimizer state


class ShardedCheckpointFiles:
    """The same interface as checkpoint.CheckpointFiles, but every rank takes part in a save."""

    def __init__(self, directory: Path, keep: int, d: Dist):
        self.dir = Path(directory)
        self.keep = max(1, keep)
        self.dist = d

    def steps(self) -> list[Path]:
        """Complete step checkpoints, newest first (trainer.pt is written last)."""
        return sorted((p for p in self.dir.glob("step-*.dcp") if (p / EXTRAS).is_file()), reverse=True)

    def save(self, checkpointer, step: int) -> Path:
        final = self.dir / f"step-{step:09d}.dcp"
        tmp = self.dir / f".{final.name}.tmp"
        if self.dist.is_main:
            shutil.rmtree(tmp, ignore_errors=True)  # left by a job killed mid-save
        self._barrier()
        sync_buffers(checkpointer.model, self.dist)  # DCP writes one rank's copy of a replicated tensor
        model_state, optim_state = get_state_dict(checkpointer.model, checkpointer.optimizer)
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=tmp, no_dist=not dist.is_initialized())
        if self.dist.is_main:
            save_checkpoint(checkpointer.state_dict(weights=False), tmp / EXTRAS)
            if final.exists():  # the same step saved again (a stop signal right after a save)
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync_dir(self.dir)
            for old in self.steps()[self.keep :]:
                shutil.rmtree(old, ignore_errors=True)
        self._barrier()  # no rank goes on (or resumes) before the checkpoint is complete
        return final

    def save_best(self, checkpointer) -> None:
        """best.pt: the whole model gathered on rank 0, with the config and DataSpec."""
        weights = full_state_dict(checkpointer.model)  # a collective: every rank calls it
        self.save_whole(checkpointer, weights, "best.pt")

    def save_whole(self, checkpointer, weights: dict, name: str) -> None:
        """A gathered model as an ordinary single-file checkpoint (rank 0 writes it)."""
        if self.dist.is_main:
            extras = checkpointer.state_dict(weights=False)
            save_checkpoint(
                {"model": weights, "config": extras["config"], "spec": extras["spec"], "state": extras["state"]},
                self.dir / name,
            )

    def newest_good(self, warn) -> tuple[dict, Path]:
        """trainer.pt of the newest complete checkpoint, with the directory to load shards from."""
        for path in self.steps():
            try:
                extras = load_checkpoint(path / EXTRAS)
            except CheckpointError as e:
                warn(f"{e}; falling back to the previous checkpoint")
                continue
            return {**extras, "sharded": str(path)}, path
        if any(self.dir.glob("step-*.pt")):
            raise CheckpointError(
                f"{str(self.dir)!r} holds trainer.strategy=ddp checkpoints; resume with trainer.strategy=ddp (or auto)"
            )
        raise CheckpointError(f"no readable checkpoint in {str(self.dir)!r}; start a new run without resume=")

    def _barrier(self) -> None:
        if self.dist.enabled:
            distributed.barrier(self.dist)


def load_weights(checkpointer, path: Path) -> None:
    """Load a DCP checkpoint into `checkpointer`'s model and optimizer, resharded to its ranks."""
    # get_state_dict gives the layout of this run (and creates the optimizer's state tensors if
    # no step was taken yet), which dcp.load fills in place from the saved shards.
    model_state, optim_state = get_state_dict(checkpointer.model, checkpointer.optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    try:
        dcp.load(state, storage_reader=_SafeReader(path), planner=_SafePlanner(path), no_dist=not dist.is_initialized())
    except dcp.CheckpointException as e:  # DCP wraps what failed on each rank; ours are one-line errors
        ours = [exc for exc, _ in e.failures.values() if isinstance(exc, EmberError)]
        if ours:
            raise ours[0] from None
        raise
    model, optimizer = checkpointer.model, checkpointer.optimizer
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


# Everything a DCP .metadata pickle names: the dataclasses of torch.distributed.checkpoint.metadata,
# the storage records of its file system writer, and the torch types they hold.
DCP_GLOBALS = frozenset(
    {
        (dcp_metadata.__name__, n)
        for n, v in vars(dcp_metadata).items()
        if isinstance(v, type) and v.__module__ == dcp_metadata.__name__
    }
    | {("torch", n) for n, v in vars(torch).items() if isinstance(v, torch.dtype)}
    | {
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),
        ("collections", "OrderedDict"),
        ("pathlib", "PosixPath"),  # the checkpoint_id it was saved under
        ("pathlib", "WindowsPath"),
    }
)


def _refusal_fix(path: Path) -> str:
    return f"delete {path} to resume from the checkpoint before it, or start a new run without resume="


class _SafeReader(dcp.FileSystemReader):
    """DCP's file system reader, with .metadata read once, up front, by ember.safe_pickle."""

    def __init__(self, path: Path):
        super().__init__(path)
        file = Path(path) / ".metadata"
        try:
            self.metadata = safe_pickle.load(
                file, DCP_GLOBALS, kind="torch.distributed.checkpoint .metadata file", fix=_refusal_fix(path)
            )
        except EmberError:
            raise
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file
            raise CheckpointError(f"cannot read {file} ({type(e).__name__}: {e}); {_refusal_fix(path)}") from None
        if not isinstance(self.metadata, dcp_metadata.Metadata):
            raise CheckpointError(
                f"{file} holds a {type(self.metadata).__name__}, not checkpoint metadata; {_refusal_fix(path)}"
            )

    def read_metadata(self, *args, **kwargs) -> dcp_metadata.Metadata:
        # What FileSystemReader.read_metadata does after its pickle.load.
        if self.metadata.storage_meta is None:
            self.metadata.storage_meta = dcp_metadata.StorageMeta()
        self.metadata.storage_meta.load_id = self.load_id
        return self.metadata


class _SafePlanner(dcp.DefaultLoadPlanner):
    """DCP's default planner, but non-tensor values load with weights_only=True (plain data only)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        fqn = read_item.dest_index.fqn
        start = value.tell()
        try:
            torch.load(value, weights_only=True)  # a check: refuses any global beyond plain data
        except pickle.UnpicklingError:  # torch's weights-only unpickler refused a global
            raise UnsafeFileError(
                f"{self.path} holds {fqn} as a pickle that names more than plain data: reading it could run code, "
                f"so ember refuses it; {_refusal_fix(self.path)}"
            ) from None
        except Exception as e:  # noqa: BLE001 - truncated or foreign bytes
            raise CheckpointError(
                f"cannot read {fqn} from {self.path} ({type(e).__name__}: {e}); {_refusal_fix(self.path)}"
            ) from None
        # The same bytes, now known to name plain data only, through DCP's own load_bytes (its
        # torch.load builds the same object): DCP puts it where the state dict's layout says.
        value.seek(start)
        super().load_bytes(read_item, value)
