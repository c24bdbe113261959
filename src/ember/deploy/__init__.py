"""Shipping a trained model: export with a parity check, inference, latency benchmarks, compression.

    ember export run=DIR format=torchscript|onnx|exported|safetensors [batch=dynamic]
    ember predict run=DIR input=FILE [output=FILE]
    ember bench run=DIR [batch_sizes=1,8,64] [backends=eager,compile,torchscript,onnxruntime]
    ember compress run=DIR method=dynamic_int8|prune [sparsity=0.5]

One module per concern: export.py (its per-format writers in writers.py), predict.py (its inputs
read by inputs.py, NetCDF/Zarr fields by fields.py), bench.py, compress.py; common.py holds what
they share (the model behind its normalization, held-out samples, options).
"""

from ember.deploy.common import ExportError
from ember.scoring.units import Normalized


def __getattr__(name: str):
    import importlib

    where = {
        "export_run": "export",
        "export_model": "export",
        "load_artifact": "export",
        "load_safetensors": "export",
        "FORMATS": "export",
        "predict": "predict",
        "bench_run": "bench",
        "compress_run": "compress",
    }
    if name in where:
        return getattr(importlib.import_module(f"ember.deploy.{where[name]}"), name)
    raise AttributeError(f"module 'ember.deploy' has no attribute {name!r}")


__all__ = [
    "FORMATS",
    "ExportError",
    "Normalized",
    "bench_run",
    "compress_run",
    "export_model",
    "export_run",
    "load_artifact",
    "load_safetensors",
    "predict",
]
