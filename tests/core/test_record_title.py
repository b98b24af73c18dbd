"""A result's one-line title (canvas title, results list, Compare panes) stays one line for text parameters."""

from __future__ import annotations

from protolens.core.records import ResultRecord


def test_a_class_list_parameter_is_shown_as_its_class_names_on_one_line():
    classes = "# one class per line\nmoss; Bryophyta\nTrifolium repens; white clover\n\nbare soil\n"
    title = ResultRecord("clip-dense", "1.0.0", {"classes": classes, "mode": "sclip"}, 0.3).title()
    assert "\n" not in title
    assert title == "clip-dense (classes=moss, Trifolium repens, bare soil, mode=sclip)"


def test_a_long_class_list_is_cut():
    classes = "\n".join(f"species number {i}" for i in range(40))
    title = ResultRecord("clip-dense", "1.0.0", {"classes": classes}, 0.3).title()
    shown = title[len("clip-dense (classes="):-1]
    assert len(shown) <= 60 and shown.endswith("…") and shown.startswith("species number 0, species number 1")
