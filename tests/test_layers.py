"""The package's layers and its import graph, as pyproject.toml's [tool.importlinter] contracts
say: each layer imports only those below it, nothing imports the CLI, and no two modules (or
packages) of one package import each other, directly or around a longer loop."""

from pathlib import Path

from importlinter.cli import lint_imports

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_import_contracts_are_kept():
    # The broken contract and the import chain that breaks it are in the captured output.
    assert lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True) == 0


ROOT = Path(__file__).resolve().parents[1] / "src" / "ember"
DEVELOPMENT = Path(__file__).resolve().parents[1] / "docs" / "development.md"


def _layout_map() -> str:
    text = DEVELOPMENT.read_text()
    start = text.index("## The package's layout")
    return text[text.index("```", start) : text.index("```", text.index("```", start) + 3)]


def test_the_package_root_holds_only_the_entry_points_and_the_base():
    # A new module belongs in the package of its purpose (scoring, rundir, inspection, ...).
    loose = sorted(p.name for p in ROOT.glob("*.py"))
    assert loose == [
        "__init__.py", "__main__.py", "api.py", "cli.py", "errors.py", "files.py",
        "options.py", "ranges.py", "registry.py", "safe_pickle.py",
    ]


def test_the_layout_map_names_every_package_and_root_module():
    mapped = _layout_map()
    packages = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())
    modules = sorted(p.name for p in ROOT.glob("*.py") if not p.name.startswith("__"))
    missing = [f"{name}/" for name in packages if f"  {name}/" not in mapped]
    missing += [name for name in modules if name not in mapped]
    assert missing == [], f"docs/development.md's map of the package lacks {missing}"
    # and the map names nothing that is gone
    named = {
        line.split()[0] for line in mapped.splitlines()[2:] if line.startswith("  ") and not line.startswith("   ")
    }
    assert named <= {f"{n}/" for n in packages} | set(modules), named - {f"{n}/" for n in packages} - set(modules)
