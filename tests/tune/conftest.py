import pytest

pytest.importorskip("optuna", reason="ember tune needs the tune extra: pip install 'ember[tune]'")


@pytest.fixture
def runs(tmp_path):
    return tmp_path / "runs"
