"""`ember export format=aoti`: an AOTInductor package, TorchScript's successor for C and C++.

torch.export captures the model (behind its standardizations: raw inputs in, physical outputs
out), then AOTInductor compiles it with the system's C++ compiler into a `.pt2` package: the
kernels as a shared library, the weights beside them. C++ loads it with
`torch::inductor::AOTIModelPackageLoader`, Python with `torch._inductor.aoti_load_package`. The
batch dimension stays dynamic where the model allows. Compiling takes tens of seconds on a CPU.

A package holds compiled native code by design, so loading one runs that code: load only packages
you made (ember's own `.pt2` checks for torch.export programs do not apply to it).
"""

from pathlib import Path

import torch

from ember.deploy.common import quiet

SUFFIX = ".aoti.pt2"


def write(wrapper, example: torch.Tensor, path: Path, dynamic: bool, cannot_export) -> tuple[str, str]:
    """Export and compile `wrapper` to the package `path`; returns (method, note)."""
    dims = {"x": {0: torch.export.Dim("batch", min=1, max=65536)}} if dynamic else None
    try:
        with quiet():
            program = torch.export.export(wrapper, (example,), dynamic_shapes=dims, strict=False)
    except Exception as e:  # noqa: BLE001 - every export failure is reported with its layer
        raise cannot_export(wrapper, example, "aoti", e, dynamic) from None
    with quiet():
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    return "torch.export + AOTInductor", ""


def load(path: Path):
    """The compiled package as a function of a batch of raw inputs."""
    with quiet():
        runner = torch._inductor.aoti_load_package(str(path))
    return lambda x: runner(x.contiguous())
