"""How the model is spread over processes (`trainer.strategy`).

- `ddp`: every rank holds the whole model; gradients are averaged by DistributedDataParallel.
  The default with several processes.
- `fsdp`: FSDP2 (`torch.distributed.fsdp.fully_shard`): parameters, gradients and optimizer
  state are sharded across ranks and gathered one block at a time, for models too big for one
  device. Its step checkpoints are `torch.distributed.checkpoint` directories (ember.train.sharded)
  that load onto any number of processes.

In one process both are the plain model; `fsdp` still writes the sharded checkpoint format, so a
run can move between one process and many.
"""

import contextlib
import sys
import warnings

import torch
import torch.distributed as dist
from torch import nn

from ember.errors import ConfigError
from ember.train.distributed import Dist

STRATEGIES = ("auto", "ddp", "fsdp")


def resolve(name: str) -> str:
    if name not in STRATEGIES:
        raise ConfigError(f"trainer.strategy={name!r} is not known; choose one of: {', '.join(STRATEGIES)}")
    return "ddp" if name == "auto" else name


def wrap(runner: nn.Module, model: nn.Module, strategy: str, d: Dist, device: torch.device, precision: str = "fp32") -> nn.Module:
    """The module the training step calls, spread over the ranks. FSDP shards `model` in place
    (its parameters become DTensors), so it must happen before the optimizer is built."""
    if not d.enabled:
        return runner
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(runner, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # FSDP warns that a view returned by the model would lose its hook under an in-place op;
    # ember's losses never modify the model's output in place.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    # Under bf16/fp16 the parameters are gathered in that dtype (half the traffic) while
    # gradients are reduced in fp32, so the sum over many ranks keeps its precision.
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    policy = MixedPrecisionPolicy(param_dtype=half, reduce_dtype=torch.float32) if half else MixedPrecisionPolicy()
    # One FSDP unit per block, so only one block's parameters are gathered at a time; the root
    # unit holds whatever is left (embeddings, heads).
    for unit in shard_units(model):
        fully_shard(unit, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return runner


def sync_buffers(model: nn.Module, d: Dist) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank. Each rank's running statistics
    follow its own batches (under DDP too, which sends rank 0's only before a forward); the
    ones that count are rank 0's, which are saved: evaluation and checkpoints use those."""
    if d.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The entries of the outermost ModuleLists and Sequentials that hold trainable parameters:
    transformer blocks, conv stages, the layers of an MLP."""
    units: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        container = isinstance(module, (nn.ModuleList, nn.Sequential))
        for child in module.children():
            if container and any(p.requires_grad for p in child.parameters()):
                units.append(child)
            else:
                visit(child)

    visit(model)
    return units


def no_sync(strategy: str, runner: nn.Module, model: nn.Module, d: Dist):
    """A context for micro-batches that must not reduce gradients yet (gradient accumulation),
    or None when there is nothing to skip."""
    if not d.enabled:
        return None
    if strategy == "ddp":
        return runner.no_sync
    return lambda: _fsdp_no_sync(model)


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def is_sharded(model: nn.Module) -> bool:
    # Importing torch.distributed.fsdp costs ~1 s: a process that never imported it has no
    # sharded model, and every single-process run asks.
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


def local(t: torch.Tensor | None) -> torch.Tensor | None:
    """A DTensor (FSDP's gradient norm) as a plain tensor; anything else unchanged."""
    return t.full_tensor() if t is not None and hasattr(t, "full_tensor") else t


def full_state_dict(model: nn.Module) -> dict:
    """The whole model's weights, for rank 0 to write. Under FSDP it is a collective (every rank
    calls it), gathered into rank 0's CPU memory; the other ranks get an empty dict."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model: nn.Module, state: dict) -> None:
    """Load whole-model weights (best.pt, model.init) into a sharded or plain model."""
    if not is_sharded(model):
        model.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
