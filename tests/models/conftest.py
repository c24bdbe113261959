import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "compile: torch.compile of every registered model (inductor compiles C++ on CPU, ~5 s a model); run with -m compile")


def pytest_collection_modifyitems(config, items):
    # The whole-registry compile test is opt-in: selected explicitly with -m compile.
    if "compile" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="torch.compile over the whole registry is opt-in: pytest tests/models -m compile")
    for item in items:
        if "compile" in item.keywords:
            item.add_marker(skip)
