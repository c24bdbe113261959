"""The package's layers and its import graph, as pyproject.toml's [tool.importlinter] contracts
say: each layer imports only those below it, nothing imports the CLI, and no two modules (or
packages) of one package import each other, directly or around a longer loop."""

from pathlib import Path

from importlinter.cli import lint_imports

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_import_contracts_are_kept():
    # The broken contract and the import chain that breaks it are in the captured output.
    assert lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True) == 0
