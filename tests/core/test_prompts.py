"""Class lists (one class per line, synonyms after ';') and CLIP's 80 ImageNet prompt templates."""

from __future__ import annotations

import pytest

from protolens.core.errors import ParamError
from protolens.core.prompts import IMAGENET_TEMPLATES, ClassPrompt, format_class_list, parse_class_list


def test_parse_lines_synonyms_comments_and_whitespace():
    text = ("# cover classes\n\n  Trifolium repens ;  white   clover; \n"
            "moss\n   # indented comment\nbare soil; soil;SOIL\nCarex, sedges\n;\n")
    prompts = parse_class_list(text)
    assert prompts == [
        ClassPrompt("Trifolium repens", ("Trifolium repens", "white clover")),
        ClassPrompt("moss", ("moss",)),
        ClassPrompt("bare soil", ("bare soil", "soil")),  # a synonym repeated on its line (any case): once
        ClassPrompt("Carex, sedges", ("Carex, sedges",)),  # commas belong to names
    ]


def test_round_trip():
    prompts = parse_class_list("a; b\nc\nd;e;f\n")
    text = format_class_list(prompts)
    assert text == "a; b\nc\nd; e; f\n"
    assert parse_class_list(text) == prompts


@pytest.mark.parametrize("text, words", [
    ("", "at least one class"),
    ("# only a comment\n\n", "at least one class"),
    ("moss\nsoil\nMoss\n", "line 3"),
    ("moss\nsoil; moss\n", "already given on line 1"),
    ("background\n", "reserved"),
    ("moss; Background\n", "line 1"),
])
def test_parse_errors_name_the_line(text, words):
    with pytest.raises(ParamError, match=words):
        parse_class_list(text)


def test_class_prompt_needs_its_name_first():
    with pytest.raises(ParamError):
        ClassPrompt("moss", ("bryophyte",))


def test_templates_are_clips_eighty_in_order():
    assert len(IMAGENET_TEMPLATES) == 80 == len(set(IMAGENET_TEMPLATES))
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}."
    assert IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
    metadata = pytest.importorskip("open_clip.zero_shot_metadata")
    assert IMAGENET_TEMPLATES == tuple(f("{}") for f in metadata.OPENAI_IMAGENET_TEMPLATES)
