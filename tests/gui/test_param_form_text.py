"""A ``text`` parameter in the generated form: a multi-line editor, values()/set_values() and a debounced changed."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPlainTextEdit

from protolens.core.params import parse_param_specs
from protolens.gui.param_form import TEXT_LINES, ParamForm

SPECS = parse_param_specs({
    "classes": {"type": "text", "default": "grass\nmoss", "help": "One class per line."},
    "mode": {"type": "choice", "default": "sclip", "choices": ["sclip", "maskclip", "clearclip"]},
})


def _form(qtbot) -> ParamForm:
    form = ParamForm()
    qtbot.addWidget(form)
    form.set_specs(SPECS)
    form.show()
    return form


def test_text_param_is_a_multiline_editor_showing_the_default(qtbot):
    form = _form(qtbot)
    editor = form.editor("classes")
    assert isinstance(editor, QPlainTextEdit)
    assert editor.toPlainText() == "grass\nmoss"
    assert form.values() == {"classes": "grass\nmoss", "mode": "sclip"}
    line = editor.fontMetrics().lineSpacing()
    assert TEXT_LINES * line <= editor.height() < (TEXT_LINES + 3) * line  # a few lines high


def test_set_values_shows_text_without_emitting(qtbot):
    form = _form(qtbot)
    seen: list[dict] = []
    form.changed.connect(seen.append)
    form.set_values({"classes": "Trifolium repens; white clover\nbare soil\n", "mode": "clearclip"})
    assert form.editor("classes").toPlainText() == "Trifolium repens; white clover\nbare soil\n"
    assert form.values()["classes"] == "Trifolium repens; white clover\nbare soil\n"
    qtbot.wait(50)
    form.flush()
    assert seen == []
    form.set_values({})  # missing -> the default
    assert form.values()["classes"] == "grass\nmoss"


def test_typing_emits_changed_once_per_burst_with_the_text(qtbot):
    form = _form(qtbot)
    editor = form.editor("classes")
    seen: list[dict] = []
    form.changed.connect(seen.append)
    editor.setFocus()
    editor.moveCursor(editor.textCursor().MoveOperation.End)
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    qtbot.keyClicks(editor, "lichen; crustose lichen")
    assert seen == []  # debounced: nothing while typing
    qtbot.waitUntil(lambda: len(seen) == 1, timeout=2000)
    qtbot.wait(100)
    assert len(seen) == 1
    assert seen[0] == {"classes": "grass\nmoss\nlichen; crustose lichen", "mode": "sclip"}
    editor.insertPlainText("\nsedge")
    form.flush()  # a pending edit can be emitted at once (before a run)
    assert len(seen) == 2 and seen[1]["classes"].endswith("\nsedge")
