"""The ``text`` parameter type: a multi-line string; on the command line a FILE whose UTF-8 text is the value."""

from __future__ import annotations

import pytest

from protolens.core.errors import ParamError
from protolens.core.params import PARAM_TYPES, make_params, parse_cli_args, parse_param_specs, read_text_file

CLASSES = "Trifolium repens; white clover\nmoss\n\n# comment\nbare soil; soil\n"
MANIFEST = {
    "classes": {"type": "text", "default": "grass\nmoss", "label": "Classes", "help": "One class per line."},
    "logit_scale": {"type": "float", "default": 40.0},
}


@pytest.fixture()
def specs():
    return parse_param_specs(MANIFEST)


def test_text_is_a_param_type_and_keeps_newlines(specs):
    assert "text" in PARAM_TYPES
    spec = specs[0]
    assert (spec.type, spec.default, spec.cli_flag) == ("text", "grass\nmoss", "--classes")
    assert spec.coerce(CLASSES) == CLASSES  # newlines, blank lines, comments kept verbatim
    assert spec.coerce("a\r\nb\rc") == "a\nb\nc"  # one line ending on every platform: one result key
    assert spec.coerce(12) == "12"
    with pytest.raises(ParamError, match="--classes"):
        spec.coerce(b"bytes are not text")


def test_make_params_holds_the_text(specs):
    params = make_params(specs, {"classes": CLASSES})
    assert params.classes == CLASSES and params.logit_scale == 40.0
    assert make_params(specs).classes == "grass\nmoss"


def test_cli_value_is_a_file_whose_text_becomes_the_value(specs, tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text(CLASSES, encoding="utf-8")
    assert parse_cli_args(specs, ["--classes", str(path)]) == {"classes": CLASSES}
    assert parse_cli_args(specs, [f"--classes={path}", "--logit-scale", "50"]) == {"classes": CLASSES,
                                                                                   "logit_scale": 50.0}
    # UTF-8 with a byte-order mark and Windows line endings gives the same value
    path.write_bytes(b"\xef\xbb\xbf" + CLASSES.replace("\n", "\r\n").encode())
    assert parse_cli_args(specs, ["--classes", str(path)]) == {"classes": CLASSES}
    path.write_text("Lotus corniculatus; bird\u2019s-foot trefoil\n", encoding="utf-8")
    assert read_text_file(specs[0], path) == "Lotus corniculatus; bird\u2019s-foot trefoil\n"


def test_cli_file_errors_are_param_errors(specs, tmp_path):
    with pytest.raises(ParamError, match=r"--classes: .*nope\.txt: no such file"):
        parse_cli_args(specs, ["--classes", str(tmp_path / "nope.txt")])
    with pytest.raises(ParamError, match="not a file"):
        parse_cli_args(specs, ["--classes", str(tmp_path)])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Tr\u00e8fle".encode("latin-1"))
    with pytest.raises(ParamError, match="not UTF-8 text"):
        parse_cli_args(specs, ["--classes", str(latin1)])
    with pytest.raises(ParamError, match="needs a FILE"):
        parse_cli_args(specs, ["--classes="])
    with pytest.raises(ParamError, match="needs a value"):
        parse_cli_args(specs, ["--classes"])
