"""ember.errors.first_line: the one-line cause every error message and warning quotes."""

from ember.errors import describe, first_line


def test_first_line_skips_a_bare_heading_and_colour_codes():
    assert first_line("Error(s) in loading state_dict:\n\tsize mismatch for w") == "size mismatch for w"
    assert first_line("\x1b[31mshape mismatch\x1b[0m\nmore") == "shape mismatch"
    assert first_line(ValueError()) == "ValueError"


def test_first_line_is_cut_at_240_characters():
    text = first_line("x" * 500)
    assert len(text) == 240 and text.endswith("...")


def test_innermost_reads_the_root_cause():
    try:
        try:
            raise KeyError("the root")
        except KeyError as e:
            raise RuntimeError("a wrapper") from e
    except RuntimeError as e:
        assert first_line(e) == "a wrapper"
        assert first_line(e, innermost=True) == "'the root'"
        assert describe(e) == "RuntimeError: a wrapper"
