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
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ember.errors import ConfigError
from ember.train.distributed import Dist

STRATEGIES = ("auto", "ddp", "fsdp")


@dataclass
class Parallel:
    """How the training step runs over the processes, resolved once from trainer.strategy."""

    strategy: str  # ddp | fsdp (one process: the plain model either way)
    dist: Dist
    step_module: nn.Module | None  # what the training step calls: the model (or its own loss), wrapped, compiled
    # what evaluation calls: the compiled model, never the DDP wrapper (its hooks are for training)
    eval_module: nn.Module
    sharded_params: bool  # FSDP made the parameters DTensors: no inference mode, no FLOP counting
    no_sync: Callable | None  # a context for micro-batches that must not reduce gradients yet

    @property
    def sharded_checkpoints(self) -> bool:
        """strategy=fsdp writes DCP step checkpoints that every rank takes part in, on any number
        of processes, so a run can move between one process and many."""
        return self.strategy == "fsdp"

    def accumulating(self, defer: bool):
        """The context of one micro-batch's backward: with `defer` (not the last micro-batch of
        an optimizer step) gradients stay local, so they are reduced once per step, not per
        micro-batch; DDP and FSDP each have their own switch for it."""
        return self.no_sync() if defer and self.no_sync is not None else contextlib.nullcontext()

    def close(self) -> None:
        """Drop the DDP wrapper while the process group still lives. Were its C++ reducer the
        last holder of a gloo group, the group's destructor would join gloo's threads with the
        GIL held while one of them waits for the GIL: a hang at the end of the run."""
        self.step_module = self.no_sync = None


class _LossForward(nn.Module):
    """Calls a model's own `loss(batch)` through forward(), so DDP sees (and syncs) the pass."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        return self.model.loss((x, y))


def plan(
    name: str, model: nn.Module, own_loss: bool, d: Dist, device: torch.device, precision: str, compile_mode: str | None
) -> Parallel:
    """Spread `model` over the processes and say how the step and evaluation call it; the step
    calls the model's own loss where `own_loss` (ember.models.brings_own_loss). `compile_mode`:
    None (eager), "default" or "reduce-overhead" (CUDA graphs) for torch.compile."""
    name = resolve(name)
    runner = _LossForward(model) if own_loss else model
    runner = wrap(runner, model, name, d, device, precision)
    ddp = d.enabled and name == "ddp"
    skip_sync = no_sync(name, runner, model, d)
    if compile_mode:
        # Static shapes: the epoch's short last batch and the evaluation batches get graphs of
        # their own (~5 in all), rather than one dynamic-shape graph whose kernels ran the 1-D CNN
        # at 0.66x of its eager speed on CPU in one run (benchmarks/compile.py).
        runner = torch.compile(runner, mode=None if compile_mode == "default" else compile_mode, dynamic=False)
    return Parallel(
        strategy=name,
        dist=d,
        step_module=runner,
        eval_module=model if ddp or own_loss else runner,
        sharded_params=is_sharded(model),
        no_sync=skip_sync,
    )


def resolve(name: str) -> str:
    if name not in STRATEGIES:
        raise ConfigError(f"trainer.strategy={name!r} is not known; choose one of: {', '.join(STRATEGIES)}")
    return "ddp" if name == "auto" else name


def wrap(
    runner: nn.Module, model: nn.Module, strategy: str, d: Dist, device: torch.device, precision: str = "fp32"
) -> nn.Module:
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
