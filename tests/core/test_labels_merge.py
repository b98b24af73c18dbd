"""merge_label_sets: one class list from several projects, or an error naming both sources."""

from __future__ import annotations

import pytest

from protolens.core.labels import LabelClass, LabelError, LabelSet, merge_label_sets


def _set(*classes):
    return LabelSet([LabelClass(i, name, colour) for i, name, colour in classes])


def test_merge_keeps_first_colour_and_order():
    a = _set((1, "moss", (1, 1, 1)), (4, "grass", (4, 4, 4)))
    b = _set((4, "grass", (9, 9, 9)), (2, "lichen", (2, 2, 2)))
    merged = merge_label_sets([("a", a), ("b", b)])
    assert [(c.id, c.name, c.color) for c in merged.classes] == [
        (1, "moss", (1, 1, 1)), (4, "grass", (4, 4, 4)), (2, "lichen", (2, 2, 2))]
    assert len(a.classes) == 2 and len(b.classes) == 2  # sources untouched


def test_clashes_name_both_sources_and_every_class():
    a = _set((1, "moss", (1, 1, 1)), (2, "grass", (2, 2, 2)))
    b = _set((1, "lichen", (1, 1, 1)), (3, "grass", (2, 2, 2)))
    with pytest.raises(LabelError) as info:
        merge_label_sets([("/data/photos", a), ("/data/photos2", b)])
    message = str(info.value)
    assert "id 1 is 'moss' in /data/photos but 'lichen' in /data/photos2" in message
    assert "'grass' is id 2 in /data/photos but id 3 in /data/photos2" in message
