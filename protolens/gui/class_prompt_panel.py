"""The Class prompts panel: the class list of a text-prompted backend (clip-dense), its maps and "Use as mask".

Shown when the selected backend has a ``classes`` parameter of type ``text``. The panel is then that
parameter's only editor: the parameter form's own text box for it is hidden, and every valid edit is written
into the form (``ParamForm.set_values`` + ``changed``), exactly as if the user had typed there, so the run, the
result key and the settings see one value. The list is parsed with
:func:`protolens.core.prompts.parse_class_list` (one class per line, synonyms after ``;``, ``#`` comments);
a parse error is shown under the text box and the parameter keeps the last valid list.

Each class is listed with its colour: the project's class of that name (matched case-sensitively, spaces
stripped, as :meth:`protolens.core.labels.LabelSet.ids_from` matches a label map), or for a name the project
lacks the colour it will get when it is added (the next default colours, in list order). The list is also the
per-class map picker: choosing a row shows that class's named heatmap of the result (through the Results
panel's "Map shown", which stays the one place that decides the canvas's map). The result's argmax label map
is drawn by :class:`protolens.gui.layer_overlay.LayerOverlay` in the project's class colours (the panel sets its
``label_rgba``); :func:`recolor_label_overlay` repaints it when the classes change. "Use as mask" asks the editor
to start from that label map (classes matched to the project by name, new ones added).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QGroupBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from protolens.core.errors import ProtolensError
from protolens.core.labels import LabelSet
from protolens.core.prompts import ClassPrompt, parse_class_list
from protolens.gui.layer_overlay import display_grid

CLASSES_PARAM = "classes"
"""The parameter the panel edits (type ``text``)."""
MAIN_MAP = ""
"""The map name of the result's main heatmap (as in the Results panel)."""
EDIT_DELAY_MS = 600
"""Typing pauses this long before the list is parsed and written into the parameter."""
OVERLAY_ALPHA = 140


def predicted_colors(names: Sequence[str], labels: LabelSet) -> dict[str, tuple[int, int, int]]:
    """The colour each class name has, or will get, in the project's classes.

    Parameters
    ----------
    names : sequence of str
        Class names in list order (background excluded).
    labels : LabelSet
        The project's classes; not modified (a copy takes the new names).

    Returns
    -------
    dict of str to (r, g, b)
        A known name keeps its project colour; unknown names get the colours :meth:`LabelSet.ensure` gives
        them when added in this order, which is what "Use as mask" does (:meth:`LabelSet.ids_from`).
    """
    copy = LabelSet.from_json(labels.to_json())
    out: dict[str, tuple[int, int, int]] = {}
    for name in names:
        if name.strip():
            try:
                out[name] = tuple(int(c) for c in copy.ensure(name).color)
            except ProtolensError:  # all 254 ids in use: grey
                out[name] = (128, 128, 128)
    return out


def project_class_rgba(label_map: Any, labels: LabelSet, alpha: int = OVERLAY_ALPHA) -> np.ndarray:
    """A label map painted in the project's class colours, at the overlay's display grid.

    Parameters
    ----------
    label_map : protolens.core.layers.LabelMap
        ``ids`` (rows, cols) int32, 0 background, -1 no class; ``classes[i]`` names id ``i``.
    labels : LabelSet
        The project's classes (matched by name; names it lacks get their future colours, see
        :func:`predicted_colors`).
    alpha : int
        Opacity 0..255 of class pixels; background and -1 are transparent.

    Returns
    -------
    numpy.ndarray
        (rows', cols', 4) uint8 RGBA at :func:`~protolens.gui.layer_overlay.display_grid` (the grid
        :class:`~protolens.gui.layer_overlay.LayerOverlay` draws; nearest-neighbour resize), row-major.
    """
    names = list(label_map.classes)
    colors = predicted_colors(names[1:], labels)
    lut = np.zeros((max(len(names), 1), 4), np.uint8)
    for index, name in enumerate(names[1:], start=1):
        if name in colors:
            lut[index] = (*colors[name], alpha)
    ids = display_grid(np.asarray(label_map.ids, np.int32), label_map.image_size)
    inside = (ids > 0) & (ids < len(lut))
    return np.where(inside[..., None], lut[np.clip(ids, 0, len(lut) - 1)], 0).astype(np.uint8)


def recolor_label_overlay(overlay: Any, found: Any, labels: LabelSet) -> bool:
    """Repaint ``overlay``'s class overlay (drawn by ``LayerOverlay.show(found)``) in the project's colours
    (after the project's classes changed).

    Returns True when ``found`` has a label map (and it was repainted).
    """
    label_map = found.layers.label_map if found is not None else None
    if label_map is None or overlay.canvas.image_size is None:
        return False
    height, width = overlay.canvas.image_size
    overlay.label_item.setImage(project_class_rgba(label_map, labels))
    overlay.label_item.setRect(QRectF(0, 0, width, height))
    return True


def _swatch(color: tuple[int, int, int] | None) -> QIcon:
    pixmap = QPixmap(14, 14)
    pixmap.fill(QColor(*color) if color is not None else QColor(0, 0, 0, 0))
    return QIcon(pixmap)


class ClassPromptPanel(QGroupBox):
    """Class list editor, per-class map picker and "Use as mask" of a text-prompted backend.

    Parameters
    ----------
    labels : callable returning LabelSet
        The project's current classes (read on every refresh; the panel never changes them).
    overlay : LayerOverlay, optional
        The canvas's layer overlay: the panel makes it paint label maps in the project's colours (any result
        with a label map, whichever backend made it) and :meth:`refresh` repaints it.

    Signals
    -------
    map_picked(str)      the named heatmap to show ("" = the main heatmap)
    mask_requested()     "Use as mask": start the editor from the result's label map
    """

    map_picked = Signal(str)
    mask_requested = Signal()

    def __init__(self, labels: Callable[[], LabelSet], overlay: Any = None, parent: QWidget | None = None) -> None:
        super().__init__("Class prompts", parent)
        self._labels, self.overlay = labels, overlay
        if overlay is not None:
            overlay.label_rgba = lambda label_map: project_class_rgba(label_map, self._labels())
        self._found: Any = None
        self._form: Any = None
        self._prompts: list[ClassPrompt] = []
        self._maps: list[str] = []
        self._has_label_map = False
        self._shown_map = MAIN_MAP
        layout = QVBoxLayout(self)
        hint = QLabel("One class per line; synonyms after “;” (Trifolium repens; white clover). "
                      "Lines starting with # are skipped.")
        hint.setWordWrap(True)
        hint.setStyleSheet("color:#888;font-size:11px;")
        self.text = QPlainTextEdit()
        self.text.setObjectName("class_text")
        self.text.setPlaceholderText("Trifolium repens; white clover\nmoss\nbare soil")
        self.text.setFixedHeight(self.text.fontMetrics().lineSpacing() * 6 + 12)
        self.text.textChanged.connect(self._text_edited)
        self.text.installEventFilter(self)
        self.error = QLabel()
        self.error.setObjectName("class_error")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color:#e05050;")
        self.error.setVisible(False)
        self.list = QListWidget()
        self.list.setObjectName("class_maps")
        self.list.setMaximumHeight(160)
        self.list.currentItemChanged.connect(self._item_changed)
        self.use_as_mask = QPushButton("Use as mask")
        self.use_as_mask.setObjectName("use_as_mask")
        self.use_as_mask.setToolTip("Start the mask editor from the class map: classes are matched to the project's "
                                    "classes by name, new ones are added.")
        self.use_as_mask.clicked.connect(self.mask_requested)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(EDIT_DELAY_MS)
        self._timer.timeout.connect(self.apply_text)
        for widget in (hint, self.text, self.error, QLabel("Class maps (choose one to show it):"), self.list,
                       self.use_as_mask):
            layout.addWidget(widget)
        self._rebuild_list()
        self.setVisible(False)

    # --- the backend's parameter -------------------------------------------------------------------
    def attach(self, form: Any, specs: Sequence[Any]) -> bool:
        """Edit ``form``'s ``classes`` text parameter when ``specs`` has one (the panel shows, the form's own
        editor of it hides); otherwise hide. Returns whether the panel is in use."""
        spec = next((s for s in specs if s.name == CLASSES_PARAM and s.type == "text"), None)
        self._timer.stop()
        self._form = form if spec is not None else None
        self.setVisible(spec is not None)
        if spec is None:
            return False
        form.layout().setRowVisible(form.editor(CLASSES_PARAM), False)
        self._prompts = []
        self.text.blockSignals(True)
        self.text.setPlainText(str(form.values().get(CLASSES_PARAM, "")))
        self.text.blockSignals(False)
        self._parse(self.text.toPlainText())
        return True

    def _text_edited(self) -> None:
        self._timer.start()

    def apply_text(self, *, emit: bool = True) -> bool:
        """Parse the text now; when valid, write it into the form's ``classes`` (emitting the form's
        ``changed`` when it differs and ``emit``). Returns whether the text is a valid class list."""
        self._timer.stop()
        text = self.text.toPlainText()
        if not self._parse(text):
            return False
        form = self._form
        if form is not None:
            values = form.values()
            if values.get(CLASSES_PARAM) != text:
                form.set_values({**values, CLASSES_PARAM: text})
                if emit:
                    form.changed.emit(form.values())
        return True

    def flush(self) -> bool:
        """Before a run: write an edit still waiting for the typing pause into the form, without ``changed``
        (the caller reads the form next). Returns whether there was one."""
        if not self._timer.isActive():
            return False
        self.apply_text(emit=False)
        return True

    def eventFilter(self, watched: Any, event: QEvent) -> bool:  # noqa: N802 - Qt override
        """Leaving the text box applies a pending edit at once."""
        if watched is self.text and event.type() == QEvent.Type.FocusOut and self._timer.isActive():
            self.apply_text()
        return False

    def _parse(self, text: str) -> bool:
        try:
            prompts = parse_class_list(text)
        except ProtolensError as exc:
            kept = " — runs use the last valid list until this is fixed" if self._prompts else ""
            self.error.setText(f"{exc}{kept}")
            self.error.setVisible(True)
            return False
        self.error.setVisible(False)
        self._prompts = prompts
        self._rebuild_list()
        return True

    def prompts(self) -> list[ClassPrompt]:
        """The classes of the last valid list."""
        return list(self._prompts)

    # --- the result ----------------------------------------------------------------------------------
    def show_result(self, found: Any, shown_map: str = MAIN_MAP) -> None:
        """Offer ``found``'s named heatmaps (None: no result) and mark ``shown_map`` as the one shown (the overlay's
        ``LayerOverlay.show(found)`` painted the label map in the project's colours already)."""
        layers = found.layers if found is not None else None
        self._found = found
        self._maps = list(layers.heatmaps) if layers is not None else []
        self._has_label_map = layers is not None and layers.label_map is not None
        self._shown_map = shown_map
        self._rebuild_list()

    def set_map(self, name: str) -> None:
        """Reflect the map shown on the canvas (the Results panel's choice) without emitting ``map_picked``."""
        self._shown_map = name
        self.list.blockSignals(True)
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == name:
                self.list.setCurrentItem(item)
                break
        else:
            self.list.setCurrentItem(None)
        self.list.blockSignals(False)

    def refresh(self) -> None:
        """Redraw the class colours of the list and the overlay (after the project's classes changed)."""
        self._rebuild_list()
        if self.overlay is not None and self._found is not None:
            recolor_label_overlay(self.overlay, self._found, self._labels())

    def follow(self, editor_panel: Any) -> None:
        """Refresh after the editor panel's class edits (connected after the edit session's own slots, so the
        project has changed by then)."""
        for signal in (editor_panel.add_class_requested, editor_panel.rename_class_requested,
                       editor_panel.recolor_class_requested, editor_panel.remove_class_requested):
            signal.connect(lambda *_: self.refresh())

    def _rebuild_list(self) -> None:
        names = [p.name for p in self._prompts]
        extra = [m for m in self._maps if m not in names]  # maps of classes no longer in the list
        colors = predicted_colors([*names, *extra], self._labels())
        self.list.blockSignals(True)
        self.list.clear()
        main = QListWidgetItem("max probability (main map)")
        main.setData(Qt.ItemDataRole.UserRole, MAIN_MAP)
        self.list.addItem(main)
        synonyms = {p.name: p.synonyms for p in self._prompts}
        for name in [*names, *extra]:
            item = QListWidgetItem(_swatch(colors.get(name)), name)
            item.setData(Qt.ItemDataRole.UserRole, name)
            more = [s for s in synonyms.get(name, ()) if s != name]
            tip = f"synonyms: {'; '.join(more)}" if more else "no synonyms"
            if name not in self._maps:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
                item.setText(f"{name}  (run to compute)" if self._maps else name)
                tip += " · not in the shown result: Run to compute its map"
            elif name in extra:
                item.setText(f"{name}  (not in the list)")
            item.setToolTip(tip)
            self.list.addItem(item)
        self.list.blockSignals(False)
        self.set_map(self._shown_map)
        self.use_as_mask.setEnabled(self._has_label_map)

    def _item_changed(self, item: QListWidgetItem | None, _previous: Any) -> None:
        if item is not None:
            self._shown_map = item.data(Qt.ItemDataRole.UserRole)
            self.map_picked.emit(self._shown_map)

    def color_of(self, name: str) -> tuple[int, int, int] | None:
        """The swatch colour of class ``name`` in the list (None when not listed)."""
        return predicted_colors([p.name for p in self._prompts] + list(self._maps), self._labels()).get(name)
