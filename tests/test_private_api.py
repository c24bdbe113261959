"""Canaries for the private torch names ember still uses (docs/development.md lists each, with why
no public one serves): each test asserts the name exists and behaves as ember relies on, so a torch
upgrade that moves one fails here, by name, rather than deep inside an export or a resume. And
ember calls no private API of Hydra or Optuna (Optuna's CmaEsSampler._restore_optimizer, the one
documented exception, has its canary in tests/tune/test_samplers.py)."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).parents[1] / "src" / "ember"


def _sources() -> dict[str, str]:
    return {str(p.relative_to(SRC)): p.read_text(encoding="utf-8") for p in SRC.rglob("*.py")}


def test_no_private_hydra_or_optuna_api():
    pattern = re.compile(r"hydra\._internal|\._storage\b|\._trial_id\b")
    found = [f"{name}: {m.group(0)}" for name, text in _sources().items() for m in pattern.finditer(text)]
    assert found == []


def test_every_private_torch_name_in_src_is_listed_in_the_development_docs():
    docs = (SRC.parents[1] / "docs" / "development.md").read_text(encoding="utf-8")
    names = set()
    for text in _sources().values():
        names |= set(re.findall(r"torch(?:\.\w+)*?\._[a-z]\w*(?:\.\w+)*", text))
    assert names, "the pattern found nothing: it is broken"
    assert sorted(n for n in names if f"`{n}" not in docs) == []


def test_pytree_tree_leaves_flattens_in_insertion_order():
    from torch.utils._pytree import tree_leaves  # export.py, fields.py, predict.py

    x, y, z = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    assert [id(t) for t in tree_leaves({"b": x, "a": [y, (z,)]})] == [id(x), id(y), id(z)]


def test_sympy_functions_hold_the_shape_arithmetic_classes():
    import sympy
    import torch.utils._sympy.functions as functions  # deploy/pt2.py: what a .pt2 shape may call

    for name in ("FloorDiv", "CeilDiv", "ModularIndexing", "CleanDiv", "Mod", "PythonMod", "Max", "Min"):
        cls = getattr(functions, name)
        assert isinstance(cls, type) and issubclass(cls, sympy.Basic) and cls.__module__ == functions.__name__, name


def test_ops_types_tell_an_operator_from_other_attributes():
    from torch._higher_order_ops.cond import cond  # noqa: F401 - registers torch.ops.higher_order.cond

    assert isinstance(torch.ops.aten.add.Tensor, torch._ops.OpOverload)  # deploy/pt2.py
    assert isinstance(torch.ops.higher_order.cond, torch._ops.HigherOrderOperator)
    assert not isinstance(torch.ops.aten.add, (torch._ops.OpOverload, torch._ops.HigherOrderOperator))


def test_aoti_package_functions_exist():
    import torch._inductor  # deploy/aoti.py: torch documents AOTInductor under this name

    assert callable(torch._inductor.aoti_compile_and_package) and callable(torch._inductor.aoti_load_package)


def test_fused_kernel_devices_include_cpu_and_cuda():
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices  # train/optim.py

    devices = _get_fused_kernels_supported_devices()
    assert isinstance(devices, list) and {"cpu", "cuda"} <= set(devices)


def test_foreach_lerp_moves_each_tensor_in_place():
    averaged, current = [torch.zeros(2), torch.full((3,), 4.0)], [torch.ones(2), torch.zeros(3)]
    torch._foreach_lerp_(averaged, current, 0.25)  # train/build.py: the EMA update in one kernel
    assert torch.equal(averaged[0], torch.full((2,), 0.25)) and torch.equal(averaged[1], torch.full((3,), 3.0))


def test_compiled_module_state_dict_keys_carry_orig_mod():
    compiled = torch.compile(torch.nn.Linear(2, 2))  # models/transfer.py strips the prefix
    assert sorted(compiled.state_dict()) == ["_orig_mod.bias", "_orig_mod.weight"]


def test_a_persistent_loader_keeps_its_workers_in_iterator_and_shuts_them_down():
    loader = torch.utils.data.DataLoader(range(4), batch_size=2, num_workers=1, persistent_workers=True)
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3]]
    iterator = loader._iterator  # data/loaders.py stops the workers of a loader still alive at exit
    workers = list(iterator._workers)
    assert workers and all(w.is_alive() for w in workers)
    iterator._shutdown_workers()
    assert not any(w.is_alive() for w in workers)


def test_logger_modules_quieted_during_export_exist():
    for name in ("torch._export", "torch._dynamo", "torch._subclasses", "torch._functorch"):  # deploy/common.py
        assert importlib.util.find_spec(name) is not None, name


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_dcp_metadata_names_only_the_private_globals_ember_allows(tmp_path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import filesystem

    from ember.train.sharded import _SafeReader

    assert isinstance(filesystem._StorageInfo, type) and callable(torch.serialization._get_layout)  # train/sharded.py
    dcp.save({"w": torch.arange(4.0), "lr": 0.5}, checkpoint_id=tmp_path / "c.dcp", no_dist=True)
    ours, torchs = _SafeReader(tmp_path / "c.dcp"), dcp.FileSystemReader(tmp_path / "c.dcp")
    # _SafeReader.read_metadata copies what FileSystemReader.read_metadata does after its pickle.load.
    mine, theirs = ours.read_metadata(), torchs.read_metadata()
    assert mine.state_dict_metadata.keys() == theirs.state_dict_metadata.keys() == {"w", "lr"}
    assert mine.storage_meta.load_id == ours.load_id and theirs.storage_meta.load_id == torchs.load_id
