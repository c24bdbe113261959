"""The per-format writers of `ember export`, and what it says when a model does not convert.

Each writer turns the model (behind its normalization: raw inputs in) into one file and returns
(method, note): how it was converted and anything the user should know about that. A model that a
converter rejects gets an error naming the deepest layer that fails on its own and the formats that
do work for it, found by converting in memory (cannot_export).
"""

import json

import torch
from torch import nn

from ember.deploy import aoti
from ember.deploy.common import Deployed, ExportError, output_name, quiet, require
from ember.errors import first_line

TITLES = {
    "torchscript": "TorchScript",
    "onnx": "ONNX",
    "exported": "torch.export",
    "aoti": "AOTInductor",
    "safetensors": "safetensors",
}
INPUT_NAME = "input"


# -- writers: (wrapper, example, path, dynamic, spec, model_config) -> (method, note) --------------------------
def _dynamic_shapes(dynamic: bool):
    return {"x": {0: torch.export.Dim("batch")}} if dynamic else None


def to_torchscript(wrapper: nn.Module, example: torch.Tensor) -> tuple[torch.jit.ScriptModule, str, str]:
    """torch.jit.script where the model's code allows it (keeps control flow), else a trace."""
    with quiet():
        try:
            return torch.jit.script(wrapper), "torch.jit.script", ""
        except Exception as e:  # noqa: BLE001 - TorchScript rejects much of Python; tracing is the fallback
            why = first_line(e, innermost=True)
        traced = torch.jit.trace(wrapper, example, check_trace=False)
    return (
        traced,
        "torch.jit.trace",
        f"traced, since torch.jit.script failed ({why}); a trace records one path through the code",
    )


def _write_torchscript(wrapper, example, path, dynamic, spec, model_config):
    try:
        module, method, note = to_torchscript(wrapper, example)
    except Exception as e:  # noqa: BLE001
        raise cannot_export(wrapper, example, "torchscript", e, dynamic) from None
    module.save(str(path))
    return method, note


def _write_exported(wrapper, example, path, dynamic, spec, model_config):
    try:
        with quiet():
            program = torch.export.export(wrapper, (example,), dynamic_shapes=_dynamic_shapes(dynamic), strict=False)
    except Exception as e:  # noqa: BLE001
        raise cannot_export(wrapper, example, "exported", e, dynamic) from None
    with quiet():
        torch.export.save(program, str(path))
    return "torch.export", ""


def _write_onnx(wrapper, example, path, dynamic, spec, model_config):
    require("onnx", "format=onnx")
    require("onnxscript", "format=onnx")
    require("onnxruntime", "format=onnx (its parity check)")
    big = (
        sum(t.numel() * t.element_size() for t in wrapper.state_dict().values() if isinstance(t, torch.Tensor))
        > 1.5 * 2**30
    )
    try:
        with quiet():
            torch.onnx.export(
                wrapper,
                (example,),
                str(path),
                dynamo=True,
                dynamic_shapes=_dynamic_shapes(dynamic),
                input_names=[INPUT_NAME],
                output_names=[output_name(spec)],
                external_data=big,  # protobuf's 2 GiB limit; small models stay one file
                verbose=False,
            )
    except Exception as e:  # noqa: BLE001
        raise cannot_export(wrapper, example, "onnx", e, dynamic) from None
    return "torch.onnx dynamo exporter", ""


def _write_safetensors(wrapper, example, path, dynamic, spec, model_config):
    from safetensors.torch import save_file

    state = wrapper.model.state_dict()
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor) or v.is_quantized]
    if bad:
        raise ExportError(
            f"format=safetensors holds plain tensors, but {bad[0]!r} is packed or quantized (a compressed run?); "
            "export this run with format=torchscript"
        )
    meta = {"ember_spec": json.dumps(spec.to_dict())}
    if isinstance(wrapper, Deployed):  # what NaN inputs become (data.fill_value, or the means)
        meta["ember_fill"] = json.dumps(wrapper.fill.flatten().tolist())
    if model_config is not None:
        meta["ember_model"] = json.dumps(model_config)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path), metadata=meta)
    return "weights", ""


def _write_aoti(wrapper, example, path, dynamic, spec, model_config):
    return aoti.write(wrapper, example, path, dynamic, cannot_export)


WRITERS = {
    "torchscript": _write_torchscript,
    "onnx": _write_onnx,
    "exported": _write_exported,
    "aoti": _write_aoti,
    "safetensors": _write_safetensors,
}


# -- when a model does not export: which layer, and which formats do work ------------------------
def _attempt(fmt: str, module: nn.Module, args: tuple, kwargs: dict | None = None) -> None:
    """Convert `module` in memory, raising what the converter raises."""
    kwargs = kwargs or {}
    with quiet():
        if fmt == "torchscript":
            try:
                torch.jit.script(module)
            except Exception:  # noqa: BLE001
                torch.jit.trace(module, args, check_trace=False)
        elif fmt in ("exported", "aoti"):  # AOTInductor compiles torch.export's program: a model fails there
            torch.export.export(module, args, kwargs, strict=False)
        elif fmt == "onnx":
            torch.onnx.export(module, args, kwargs=kwargs, dynamo=True, verbose=False)


def cannot_export(
    wrapper: nn.Module, example: torch.Tensor, fmt: str, error: BaseException, dynamic: bool
) -> ExportError:
    """An error naming the layer that fails and the formats that work for this model."""
    if dynamic:
        try:
            _attempt_static(fmt, wrapper, example)
        except Exception:  # noqa: BLE001, S110 - fails with a fixed batch too: the model is the problem
            pass
        else:
            return ExportError(
                f"cannot export to {TITLES[fmt]} with a dynamic batch dimension ({first_line(error, innermost=True)}); "
                f"the model fixes its batch size: export with batch={len(example)}"
            )
    layer = failing_layer(wrapper.model, wrapper, example, fmt)
    where = (
        f"layer {layer[0]!r} ({layer[1]}) fails"
        if layer and layer[0]
        else f"the model's own forward ({type(wrapper.model).__name__}) fails"
        if layer
        else "it fails"
    )
    works = [f for f in ("torchscript", "exported", "onnx") if f != fmt and _works(f, wrapper, example)]
    if fmt != "safetensors" and all(
        isinstance(v, torch.Tensor) and not v.is_quantized for v in wrapper.model.state_dict().values()
    ):
        works.append("safetensors")
    works = ", ".join(works) or "none (keep the run directory's checkpoint)"
    return ExportError(
        f"cannot export to {TITLES[fmt]}: {where}: {first_line(error, innermost=True)}; "
        f"formats that work for this model: {works}"
    )


def _attempt_static(fmt: str, wrapper: nn.Module, example: torch.Tensor) -> None:
    _attempt(fmt, wrapper, (example,))


def _works(fmt: str, wrapper: nn.Module, example: torch.Tensor) -> bool:
    if fmt == "onnx":
        try:
            require("onnxscript", "onnx")
        except ExportError:
            return False
    try:
        _attempt(fmt, wrapper, (example,))
        return True
    except Exception:  # noqa: BLE001
        return False


def failing_layer(model: nn.Module, wrapper: nn.Module, example: torch.Tensor, fmt: str) -> tuple[str, str] | None:
    """The deepest submodule that fails to convert on its own: from the model down, into the
    first child that fails, until no child fails. ('', class) when the model's own code fails."""
    calls: dict[nn.Module, tuple] = {}

    def record(module, args, kwargs):
        calls.setdefault(module, (args, kwargs))

    hooks = [m.register_forward_pre_hook(record, with_kwargs=True) for m in model.modules()]
    try:
        with torch.no_grad():
            wrapper(example)
    except Exception:  # noqa: BLE001 - the model does not even run eagerly; nothing to narrow down
        return None
    finally:
        for h in hooks:
            h.remove()
    name, module = "", model
    while True:
        for child_name, child in module.named_children():
            if child not in calls:
                continue
            args, kwargs = calls[child]
            try:
                _attempt(fmt, child, args, kwargs)
            except Exception:  # noqa: BLE001
                name, module = f"{name}.{child_name}" if name else child_name, child
                break
        else:
            return name, _class_name(module)


def _class_name(module: nn.Module) -> str:
    """Linear for torch.nn's own layers; the dotted path for others (torch.ao.nn.quantized.dynamic.Linear)."""
    cls = type(module)
    if cls.__module__.startswith("torch.nn.modules") or not cls.__module__.startswith("torch."):
        return cls.__name__
    return f"{cls.__module__.split('.modules')[0]}.{cls.__name__}"
