"""The style budgets of the package, as a test: a file within 450 lines, a function within 60. A
reader should see a function on one screen and a module in one sitting (the README's style rules)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT / "src" / "ember"]
FILE_LINES, FUNCTION_LINES = 450, 60


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in package.rglob("*.py"))


def test_every_file_and_function_of_the_package_is_within_its_budget():
    sources = _sources()
    assert len(sources) > 50  # the package was found
    over = []
    for path in sources:
        text = path.read_text()
        if len(text.splitlines()) > FILE_LINES:
            over.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines (budget {FILE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINES:
                    over.append(
                        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines (budget {FUNCTION_LINES})"
                    )
    assert not over, "split these:\n" + "\n".join(over)

