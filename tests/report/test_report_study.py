"""A damaged study.json is one line for every command that reads it."""

import pytest

from ember.cli import main


@pytest.mark.parametrize("text", ['{"name": 3', "[1, 2]", '{"name": "s"}', b"\xff\xfe".decode("latin-1")])
@pytest.mark.parametrize("command", [["report"], ["tune", "--status"]])
def test_a_damaged_study_json_is_a_one_line_error(tmp_path, capsys, text, command):
    (tmp_path / "study.json").write_text(text, encoding="latin-1")
    args = [*command, str(tmp_path)] if command == ["report"] else [*command, f"run.dir={tmp_path}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "study.json' is damaged" in err
