"""Several processes through torchrun (or srun): process group, agreement, rank-0 side effects.

ember adds no launcher: `torchrun --nproc_per_node=N -m ember train ...` (or `trainer.devices=N`,
which calls torchrun's own entry point) sets RANK/WORLD_SIZE/LOCAL_RANK and the rendezvous, and
every rank runs the same `ember train`. Under `srun` without torchrun, SLURM's variables are read.
Decisions that end training (early stopping, a NaN, a stop signal) are agreed on by all ranks,
so no rank is left waiting in a collective.
"""

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ember.errors import EmberError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    env = os.environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return Dist(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_NTASKS" in env and int(env["SLURM_NTASKS"]) > 1 and "SLURM_PROCID" in env:
        # srun started every task itself: torch's env:// rendezvous needs these four.
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        env.setdefault("MASTER_ADDR", env.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"))
        env.setdefault("MASTER_PORT", "29500")
        env["RANK"], env["WORLD_SIZE"] = str(rank), str(world)
        env.setdefault("LOCAL_RANK", env.get("SLURM_LOCALID", "0"))
        return Dist(rank, world, int(env["LOCAL_RANK"]))
    return Dist()


def init(d: Dist, device: torch.device, timeout_s: float) -> None:
    """Join the process group: NCCL between GPUs, gloo on CPU."""
    if not d.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is not None and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # Under torchrun the workers share the agent's store across restarts. Without a key space
        # of their own, the workers of a restarted round can read the addresses of the round
        # before (whose ports are closed) and fail gloo's connectFullMesh with "Connection
        # refused", round after round (seen here after a SIGKILLed rank, also with a bare script).
        env = os.environ
        agent = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), d.world, is_master=False, timeout=timeout)
        store = dist.PrefixStore(f"ember/attempt_{attempt}", agent)
        dist.init_process_group(backend, store=store, rank=d.rank, world_size=d.world, timeout=timeout)
        return
    dist.init_process_group(backend, timeout=timeout)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def agree_any(flags: torch.Tensor, d: Dist) -> torch.Tensor:
    """Element-wise OR of a 0/1 tensor over all ranks (so every rank takes the same branch)."""
    if d.enabled:
        _checked(lambda: dist.all_reduce(flags, op=dist.ReduceOp.MAX), d)
    return flags


def sum_(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """The element-wise sum over all ranks (a new tensor; `value` is left as it was)."""
    if d.enabled:
        value = value.clone()
        _checked(lambda: dist.all_reduce(value, op=dist.ReduceOp.SUM), d)
    return value


def mean(value: torch.Tensor, d: Dist) -> torch.Tensor:
    return sum_(value, d) / d.world if d.enabled else value


def barrier(d: Dist) -> None:
    if d.enabled:
        _checked(dist.barrier, d)


def broadcast(obj, d: Dist):
    """Rank 0's value of a picklable object, on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    _checked(lambda: dist.broadcast_object_list(box, src=0), d)
    return box[0]


def _checked(op, d: Dist) -> None:
    try:
        op()
    except RuntimeError as e:  # DistBackendError and the other c10d errors are RuntimeErrors
        raise collective_failed(e, d) from None


def collective_failed(e: Exception, d: Dist) -> EmberError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return EmberError(
        f"rank {d.rank}: a collective with the other ranks failed ({first[:200]}); another rank died or timed out "
        "(trainer.dist_timeout)"
    )


# What gloo and NCCL say when a peer is gone or late, inside DDP's or FSDP's own collectives.
_COLLECTIVE_WORDS = ("gloo", "nccl", "connection closed by peer", "timed out", "c10d")


def is_collective_failure(e: BaseException) -> bool:
    if isinstance(e, dist.DistError):
        return True
    return isinstance(e, RuntimeError) and any(w in str(e).lower() for w in _COLLECTIVE_WORDS)
