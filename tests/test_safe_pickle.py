"""ember.safe_pickle: only the listed globals are imported or called."""

import pickle
import sys
from collections import OrderedDict

import pytest

from ember import safe_pickle
from ember.errors import UnsafeFileError


def test_listed_globals_load_and_others_are_refused_before_import(tmp_path, code_payload):
    (tmp_path / "ok").write_bytes(pickle.dumps({"a": [1, b"x"], "b": OrderedDict(c=2)}))
    assert safe_pickle.load(tmp_path / "ok", {("collections", "OrderedDict")}, kind="test file", fix="fix it") == {
        "a": [1, b"x"],
        "b": {"c": 2},
    }
    (tmp_path / "bad").write_bytes(code_payload.bytes)
    with pytest.raises(
        UnsafeFileError,
        match=(
            r"bad names posix.system, which a test file never holds: reading it could run code, "
            r"so ember refuses it; fix it"
        ),
    ):
        safe_pickle.load(tmp_path / "bad", {("collections", "OrderedDict")}, kind="test file", fix="fix it")
    assert not code_payload.marker.exists()
    # The module a refused name lives in is not even imported (importing can run code too).
    (tmp_path / "import").write_bytes(b"\x80\x04\x8c\x0bantigravity\x94\x8c\x03fly\x94\x93\x94.")
    with pytest.raises(UnsafeFileError, match="names antigravity.fly"):
        safe_pickle.load(tmp_path / "import", set(), kind="test file", fix="fix it")
    assert "antigravity" not in sys.modules
