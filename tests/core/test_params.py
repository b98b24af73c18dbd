"""Typed backend parameters: coercion, bounds, manifest parsing, frozen params and CLI parsing."""

from __future__ import annotations

import dataclasses

import pytest

from protolens.core.errors import ParamError
from protolens.core.params import ParamSpec, make_params, params_to_dict, parse_cli_args, parse_param_specs

MANIFEST = {
    "long_side": {"type": "int", "default": 518, "min": 56, "max": 2240, "step": 14, "label": "Long side",
                  "help": "Resize the longer side."},
    "head_fusion": {"type": "choice", "default": "mean", "choices": ["mean", "max", "min"]},
    "discard_ratio": {"type": "float", "default": 0.9, "min": 0.0, "max": 1.0},
    "fp16": {"type": "bool", "default": False},
    "prompt": {"type": "str", "default": "a plant"},
    "layers": {"type": "choice", "default": 12, "choices": [4, 8, 12]},
}


@pytest.fixture()
def specs() -> list[ParamSpec]:
    return parse_param_specs(MANIFEST)


def _spec(specs: list[ParamSpec], name: str) -> ParamSpec:
    return next(s for s in specs if s.name == name)


# --------------------------------------------------------------------------- ParamSpec


def test_parse_keeps_declaration_order_and_fields(specs):
    assert [s.name for s in specs] == list(MANIFEST)
    long_side = specs[0]
    assert (long_side.type, long_side.default, long_side.minimum, long_side.maximum, long_side.step) == (
        "int", 518, 56, 2240, 14)
    assert long_side.display_label == "Long side" and long_side.help == "Resize the longer side."
    assert _spec(specs, "head_fusion").choices == ("mean", "max", "min")
    assert _spec(specs, "discard_ratio").display_label == "Discard ratio"


def test_cli_flag_uses_dashes(specs):
    assert [s.cli_flag for s in specs] == ["--long-side", "--head-fusion", "--discard-ratio", "--fp16",
                                           "--prompt", "--layers"]


@pytest.mark.parametrize(("value", "expected"), [(3, 3), ("3", 3), (" 60 ", 60), (100.0, 100), ("2240", 2240)])
def test_int_coerce(value, expected):
    spec = ParamSpec("long_side", "int", 518, minimum=0, maximum=2240)
    result = spec.coerce(value)
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value", ["3.5", 3.5, "abc", "", True, None, [1]])
def test_int_coerce_rejects(value):
    spec = ParamSpec("long_side", "int", 518)
    with pytest.raises(ParamError, match="--long-side") as info:
        spec.coerce(value)
    assert "not a valid int" in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [(0.5, 0.5), ("0.25", 0.25), (1, 1.0), ("1e-1", 0.1)])
def test_float_coerce(value, expected):
    spec = ParamSpec("discard_ratio", "float", 0.9, minimum=0.0, maximum=1.0)
    result = spec.coerce(value)
    assert result == pytest.approx(expected) and type(result) is float


@pytest.mark.parametrize("value", ["half", True, None])
def test_float_coerce_rejects(value):
    with pytest.raises(ParamError, match="--discard-ratio"):
        ParamSpec("discard_ratio", "float", 0.9).coerce(value)


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (False, False), ("true", True), ("TRUE", True), ("yes", True), ("on", True), ("1", True),
    (1, True), ("no", False), ("false", False), ("off", False), ("0", False), (0, False), (" No ", False),
])
def test_bool_coerce_from_cli_strings(value, expected):
    assert ParamSpec("fp16", "bool", False).coerce(value) is expected


@pytest.mark.parametrize("value", ["maybe", "2", "", None])
def test_bool_coerce_rejects(value):
    with pytest.raises(ParamError, match="--fp16"):
        ParamSpec("fp16", "bool", False).coerce(value)


def test_choice_coerce_matches_string_form(specs):
    layers = _spec(specs, "layers")
    assert layers.coerce("8") == 8 and type(layers.coerce("8")) is int  # a CLI string becomes the declared choice
    assert _spec(specs, "head_fusion").coerce("max") == "max"
    with pytest.raises(ParamError) as info:
        _spec(specs, "head_fusion").coerce("median")
    message = str(info.value)
    assert "--head-fusion" in message and "'median'" in message and "mean, max, min" in message
    with pytest.raises(ParamError, match="--layers"):
        layers.coerce("6")


def test_str_coerce():
    spec = ParamSpec("prompt", "str", "")
    assert spec.coerce("a fern") == "a fern"
    assert spec.coerce(3) == "3"


@pytest.mark.parametrize(("value", "word"), [(55, "below the minimum 56"), (2241, "above the maximum 2240"),
                                             ("10", "below the minimum")])
def test_int_bounds(specs, value, word):
    with pytest.raises(ParamError) as info:
        _spec(specs, "long_side").coerce(value)
    assert "--long-side" in str(info.value) and word in str(info.value)


def test_bounds_are_inclusive(specs):
    long_side = _spec(specs, "long_side")
    assert long_side.coerce(56) == 56 and long_side.coerce(2240) == 2240
    ratio = _spec(specs, "discard_ratio")
    assert ratio.coerce(0.0) == 0.0 and ratio.coerce(1.0) == 1.0
    with pytest.raises(ParamError, match="--discard-ratio.*above the maximum"):
        ratio.coerce("1.01")
    with pytest.raises(ParamError, match="below the minimum"):
        ratio.coerce(-0.01)


def test_unbounded_numbers():
    spec = ParamSpec("offset", "float", 0.0)
    assert spec.coerce("-1e9") == -1e9


# --------------------------------------------------------------------------- parse_param_specs


@pytest.mark.parametrize(("table", "words"), [
    ({"x": {"type": "complex", "default": 1}}, ["'x'", "type must be one of", "int, float, bool, choice, str"]),
    ({"x": {"default": 1}}, ["'x'", "type must be one of"]),
    ({"x": {"type": "int"}}, ["'x'", "no default"]),
    ({"x": {"type": "int", "default": 10, "max": 5}}, ["--x", "above the maximum 5"]),
    ({"x": {"type": "int", "default": "ten"}}, ["--x", "not a valid int"]),
    ({"x": {"type": "bool", "default": "perhaps"}}, ["--x", "not a valid bool"]),
    ({"x": {"type": "choice", "default": "a"}}, ["'x'", "lists no choices"]),
    ({"x": {"type": "choice", "default": "a", "choices": []}}, ["'x'", "lists no choices"]),
    ({"x": {"type": "choice", "default": "d", "choices": ["a", "b"]}}, ["--x", "not one of a, b"]),
    ({"long-side": {"type": "int", "default": 1}}, ["'long-side'", "not an identifier"]),
])
def test_parse_param_specs_errors(table, words):
    with pytest.raises(ParamError) as info:
        parse_param_specs(table)
    for word in words:
        assert word in str(info.value)


def test_parse_param_specs_coerces_defaults():
    specs = parse_param_specs({"n": {"type": "int", "default": "7"}, "on": {"type": "bool", "default": "yes"},
                               "r": {"type": "float", "default": 1}})
    assert [(s.default, type(s.default)) for s in specs] == [(7, int), (True, bool), (1.0, float)]


def test_parse_param_specs_empty():
    assert parse_param_specs({}) == []


# --------------------------------------------------------------------------- make_params


def test_make_params_defaults(specs):
    params = make_params(specs)
    assert (params.long_side, params.head_fusion, params.discard_ratio, params.fp16, params.prompt,
            params.layers) == (518, "mean", 0.9, False, "a plant", 12)
    assert params_to_dict(params) == {"long_side": 518, "head_fusion": "mean", "discard_ratio": 0.9,
                                      "fp16": False, "prompt": "a plant", "layers": 12}


def test_make_params_coerces_and_validates(specs):
    params = make_params(specs, {"long_side": "224", "fp16": "yes", "layers": "4"})
    assert params.long_side == 224 and params.fp16 is True and params.layers == 4
    assert params.head_fusion == "mean"  # untouched values keep their defaults
    with pytest.raises(ParamError, match="--long-side.*below the minimum"):
        make_params(specs, {"long_side": 10})


def test_make_params_unknown_names_list_known_flags(specs):
    with pytest.raises(ParamError) as info:
        make_params(specs, {"long_sde": 224, "zoom": 2})
    message = str(info.value)
    assert "long_sde" in message and "zoom" in message
    for flag in ("--long-side", "--head-fusion", "--discard-ratio", "--fp16", "--prompt", "--layers"):
        assert flag in message
    with pytest.raises(ParamError, match="takes: none"):
        make_params([], {"x": 1})


def test_make_params_instance_is_frozen(specs):
    params = make_params(specs, class_name="VitParams")
    assert type(params).__name__ == "VitParams"
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.long_side = 1000  # type: ignore[misc]
    assert params.long_side == 518


def test_make_params_same_values_give_same_dict(specs):
    # params_to_dict feeds cache keys and provenance: a CLI string and a native value must agree.
    assert params_to_dict(make_params(specs, {"long_side": 224})) == params_to_dict(
        make_params(specs, {"long_side": "224"}))
    assert params_to_dict(make_params(specs, {"long_side": 224})) != params_to_dict(make_params(specs))


# --------------------------------------------------------------------------- parse_cli_args


def test_cli_flag_space_value(specs):
    assert parse_cli_args(specs, ["--long-side", "224", "--head-fusion", "max"]) == {"long_side": 224,
                                                                                  "head_fusion": "max"}


def test_cli_flag_equals_value(specs):
    assert parse_cli_args(specs, ["--long-side=336", "--discard-ratio=0.5", "--prompt=a fern"]) == {
        "long_side": 336, "discard_ratio": 0.5, "prompt": "a fern"}


def test_cli_value_containing_equals_sign(specs):
    assert parse_cli_args(specs, ["--prompt=a=b"]) == {"prompt": "a=b"}


def test_cli_empty_inline_string_value(specs):
    assert parse_cli_args(specs, ["--prompt=", "--long-side", "224"]) == {"prompt": "", "long_side": 224}


def test_cli_bool_switches(specs):
    assert parse_cli_args(specs, ["--fp16"]) == {"fp16": True}
    assert parse_cli_args(specs, ["--no-fp16"]) == {"fp16": False}
    assert parse_cli_args(specs, ["--fp16=no"]) == {"fp16": False}
    assert parse_cli_args(specs, ["--fp16", "--long-side", "224"]) == {"fp16": True, "long_side": 224}
    assert parse_cli_args(specs, ["--fp16", "--no-fp16"]) == {"fp16": False}  # last one wins


def test_cli_negated_bool_takes_no_value(specs):
    with pytest.raises(ParamError, match="--no-fp16"):
        parse_cli_args(specs, ["--no-fp16=yes"])


def test_cli_no_prefix_only_for_bools(specs):
    with pytest.raises(ParamError, match="unknown option --no-long-side"):
        parse_cli_args(specs, ["--no-long-side", "224"])


def test_cli_empty(specs):
    assert parse_cli_args(specs, []) == {}


def test_cli_unknown_flag_lists_known_ones(specs):
    with pytest.raises(ParamError) as info:
        parse_cli_args(specs, ["--long-sid", "224"])
    message = str(info.value)
    assert "--long-sid" in message and "--long-side" in message and "--fp16" in message


def test_cli_missing_value(specs):
    with pytest.raises(ParamError, match="--long-side needs a value"):
        parse_cli_args(specs, ["--long-side"])


def test_cli_invalid_and_out_of_bounds_values(specs):
    with pytest.raises(ParamError, match="--long-side.*not a valid int"):
        parse_cli_args(specs, ["--long-side", "big"])
    with pytest.raises(ParamError, match="--discard-ratio.*above the maximum"):
        parse_cli_args(specs, ["--discard-ratio=2"])
    with pytest.raises(ParamError, match="--head-fusion.*not one of"):
        parse_cli_args(specs, ["--head-fusion", "median"])


def test_cli_positional_argument(specs):
    with pytest.raises(ParamError, match="unexpected argument '224'"):
        parse_cli_args(specs, ["224"])
    with pytest.raises(ParamError, match="unexpected argument"):
        parse_cli_args(specs, ["--fp16", "true"])  # a bool switch does not take a separate value


def test_cli_values_feed_make_params(specs):
    values = parse_cli_args(specs, ["--long-side=224", "--no-fp16", "--layers", "8"])
    params = make_params(specs, values)
    assert (params.long_side, params.fp16, params.layers) == (224, False, 8)
