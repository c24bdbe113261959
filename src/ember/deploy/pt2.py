"""Loading `.pt2` archives (torch.export programs) without letting the file run code.

torch.export.load trusts the archive: a weight or constant flagged `use_pickle` is read with
torch.load(weights_only=False), `opaque_obj_*` constants with pickle.loads, sample inputs fall back
to weights_only=False when the safe load fails, `data/aotinductor/` holds native libraries it loads,
every symbolic-shape expression goes through sympy.sympify (which is eval), and a node's target is
any attribute path under torch, operator or math (torch.ops.load_library, for one).

ember writes none of these but plain tensors, JSON and arithmetic on shape symbols, so it reads
only that: the archive is checked in memory against the layout torch.export.save gives a plain
model, and the checked bytes (not the file again) go to torch.export.load.
"""

import ast
import io
import json
import math
import re
import zipfile
from pathlib import Path

import torch
import torch.utils._sympy.functions as sympy_functions

from ember.deploy.common import ExportError, quiet
from ember.errors import UnsafeFileError

# Every file of a plain torch.export.save archive, relative to its root folder.
LAYOUT = [
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id",
    r"models/\w+\.json",
    r"data/weights/\w+_weights_config\.json|data/weights/weight_\d+",
    r"data/constants/\w+_constants_config\.json|data/constants/tensor_\d+",
    r"data/sample_inputs/\w+\.pt",
    r"extra/[^/]+",
]
FIX = "export the run again with ember export format=exported, or use a file from a source you trust"

# Calls a symbolic-shape expression may hold (sympy's srepr of shape arithmetic, and torch's own
# sympy functions); anything else would be evaluated by sympify as Python.
SYMPY_CALLS = {
    n for n, v in vars(sympy_functions).items() if isinstance(v, type) and v.__module__ == sympy_functions.__name__
} | {
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "floor", "ceiling",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan", "StrictGreaterThan", "LessThan",
    "GreaterThan", "And", "Or", "Not", "Piecewise", "ExprCondPair", "Infinity", "NegativeInfinity", "IntInfinity",
    "NegativeIntInfinity",
}  # fmt: skip
SYMPY_NAMES = {"True", "False", "true", "false", "oo", "zoo", "nan", "int_oo"}
SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
# operator functions a graph may call: arithmetic, comparison and indexing, nothing that returns
# or calls a callable (attrgetter, methodcaller, call).
OPERATORS = {
    "add",
    "sub",
    "mul",
    "truediv",
    "floordiv",
    "mod",
    "pow",
    "neg",
    "pos",
    "abs",
    "getitem",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "and_",
    "or_",
    "xor",
    "not_",
    "invert",
    "lshift",
    "rshift",
}


def load_program(path: Path):
    """The ExportedProgram in a .pt2 file, once the archive is known to hold nothing that runs."""
    data = Path(path).read_bytes()
    check_archive(data, path)
    with quiet():
        return torch.export.load(io.BytesIO(data))


def check_archive(data: bytes, path: Path) -> None:
    """Raise UnsafeFileError unless the archive holds only what a plain torch.export.save writes."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ExportError(f"{path} is not a .pt2 archive (not a zip file); {FIX}") from None
    with archive:
        names = archive.namelist()
        root = names[0].split("/")[0] + "/" if names else ""
        if root + "archive_version" not in names:
            raise ExportError(f"{path} is not a .pt2 archive of torch.export.save (no archive_version); {FIX}")
        for name in names:
            rel = name.removeprefix(root)
            if not name.startswith(root) or not any(re.fullmatch(p, rel) for p in LAYOUT):
                _refuse(
                    path,
                    f"holds {name}, which a plain exported model never has (compiled code, "
                    "pickled objects or an older format)",
                )
            if rel.endswith("_config.json"):
                _check_payloads(json.loads(archive.read(name)), path, name)
            elif rel.startswith("data/sample_inputs/"):
                _check_weights_only(archive.read(name), path, name)
            elif rel.startswith("models/"):
                _check_program(json.loads(archive.read(name)), path)


def _refuse(path: Path, what: str):
    raise UnsafeFileError(f"{path} {what}: loading it could run code, so ember refuses it; {FIX}")


def _check_payloads(config: dict, path: Path, name: str) -> None:
    # use_pickle payloads are read with torch.load(weights_only=False); plain tensors never are.
    for fqn, entry in (config.get("config") or {}).items():
        if not isinstance(entry, dict) or entry.get("use_pickle") is not False:
            _refuse(path, f"stores {fqn} (in {name}) as a pickle")


def _check_weights_only(raw: bytes, path: Path, name: str) -> None:
    # torch reads sample inputs weights-only first and falls back to a full unpickle on failure.
    try:
        torch.load(io.BytesIO(raw), weights_only=True)
    except Exception:  # noqa: BLE001 - refused by the weights-only unpickler, or not a torch file
        _refuse(path, f"holds {name}, which is not plain tensors")


def _check_program(program, path: Path) -> None:
    """Every shape expression and every node target of the serialized program (walked as JSON)."""
    stack = [program]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if isinstance(node.get("expr_str"), str) and not _plain_expression(node["expr_str"]):
                _refuse(
                    path,
                    f"holds the shape expression {node['expr_str'][:80]!r}, which is not arithmetic on shape symbols",
                )
            if isinstance(node.get("target"), str) and "inputs" in node and not _plain_target(node["target"]):
                _refuse(path, f"calls {node['target'][:80]!r}, which is not a torch operator")
            stack.extend(node.values())


def _plain_expression(text: str) -> bool:
    """Whether sympify(text) can only build sympy arithmetic (it evals the text as Python)."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return False
    return _plain_node(tree.body)


def _plain_node(node) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float, bool))  # strings only where checked below
    if isinstance(node, ast.Name):
        return node.id in SYMPY_NAMES or re.fullmatch(r"[a-z]+\d+", node.id) is not None  # s0, u3: shape symbols
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)) and _plain_node(node.operand)
    if isinstance(node, ast.BinOp):
        arithmetic = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
        return isinstance(node.op, arithmetic) and _plain_node(node.left) and _plain_node(node.right)
    if isinstance(node, ast.Compare):
        return all(_plain_node(n) for n in [node.left, *node.comparators])
    if isinstance(node, ast.BoolOp):
        return all(_plain_node(n) for n in node.values)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SYMPY_CALLS:
        return _plain_call(node)
    return False


def _plain_call(node: ast.Call) -> bool:
    # sympy Functions sympify string arguments (eval again), so a string may only be a Symbol's
    # name or a Float's digits; keyword arguments are assumptions (integer=True) or a precision.
    args = list(node.args)
    first = args[0] if args else None
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        pattern = {"Symbol": SYMBOL, "Float": NUMBER}.get(node.func.id)
        if pattern is None or not pattern.fullmatch(first.value):
            return False
        args = args[1:]
    keywords = all(isinstance(k.value, ast.Constant) and isinstance(k.value.value, (bool, int)) for k in node.keywords)
    return keywords and all(_plain_node(a) for a in args)


def _plain_target(target: str) -> bool:
    """torch.ops.<namespace>.<op>.<overload> (and higher-order ops), or plain arithmetic."""
    module, _, name = target.partition(".")
    if module == "_operator":
        return name in OPERATORS
    if module == "math":
        return not name.startswith("_") and callable(getattr(math, name, None))
    parts = target.split(".")
    if len(parts) == 2 and parts[0] == "torch" and parts[1].startswith("sym_"):  # sym_max, sym_float: shape arithmetic
        return callable(getattr(torch, parts[1], None))
    if parts[:2] != ["torch", "ops"] or len(parts) not in (4, 5) or any(p.startswith("__") for p in parts):
        return False
    obj = torch
    try:
        for part in parts[1:]:
            obj = getattr(obj, part)
    except (AttributeError, RuntimeError):
        return False
    return isinstance(obj, (torch._ops.OpOverload, torch._ops.HigherOrderOperator))
