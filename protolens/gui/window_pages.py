"""The pages a main window shows instead of its canvas, and the training runs they open (a mixin of MainWindow).

View ▸ Compare (Ctrl+K), View ▸ Explain (Ctrl+Shift+X) and the checkpoint comparison of a training run (File ▸
Open training run…, View ▸ Training run epochs) are pages of the window's ``views`` stack, each created on first
use; choosing an epoch makes its checkpoint the weights of the run kind's backend. Model ▸ Train prototype ViT…
opens the training dialog. Only :class:`~protolens.gui.main_window.MainWindow` mixes this in: it provides
``views``, ``controller``, ``jobs``, ``settings``, ``messages``, ``backend_panel``, ``registry``, ``segmenter``,
``edit`` and the view actions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QFileDialog, QWidget

from protolens.core.runs import RunFolder


class WindowPages:
    """Compare, Explain and the epochs of a training run as pages of the main window (see the module docstring)."""

    def _show_page(self, page: QWidget | None) -> None:
        """Show ``page`` (Compare, Explain or the epochs view) instead of the main view; None = the main view."""
        page = page if page is not None else self.views.widget(0)
        self.views.setCurrentWidget(page)
        self.compare_action.setChecked(page is self.compare)
        self.epochs_action.setChecked(page is self.epochs_view)
        self.explain_action.setChecked(page is self.explain_view)
        if page is not self.views.widget(0):
            page.activate()

    def _page(self, attribute: str, make: Callable[[], QWidget]) -> QWidget:
        """The page kept in ``attribute``, made (and added to the stack) on first use."""
        page = getattr(self, attribute)
        if page is None:
            page = make()
            setattr(self, attribute, page)
            self.views.addWidget(page)
        return page

    def _toggle(self, page: QWidget, checked: bool | None) -> None:
        show = self.views.currentWidget() is not page if checked is None else bool(checked)
        self._show_page(page if show else None)

    def toggle_compare(self, checked: bool | None = None) -> None:
        """Show the Compare grid instead of the main view (View ▸ Compare, Ctrl+K), or go back."""
        def make() -> QWidget:
            from protolens.gui.compare_view import CompareView

            return CompareView(self.controller, self.jobs, self.settings)

        self._toggle(self._page("compare", make), checked)

    def toggle_explain(self, checked: bool | None = None) -> None:
        """Show the keypoint-labeling explanation of the current photo (View ▸ Explain, Ctrl+Shift+X), or go back."""
        def make() -> QWidget:
            from protolens.gui.explain_view import KeypointView

            view = KeypointView(self.controller, self.jobs, self.settings)
            view.drawn_parts = self.edit.drawn_parts
            return view

        self._toggle(self._page("explain_view", make), checked)

    def _ensure_epochs_view(self) -> Any:
        """The checkpoint comparison view (created on first use), or None when it cannot be loaded."""
        try:
            from protolens.gui.epochs_view import EpochsView
        except ImportError as exc:
            self.messages.error(f"the checkpoint comparison view is not available: {exc}")
            return None

        def make() -> QWidget:
            view = EpochsView(self.controller, self.jobs, self.settings)
            view.epoch_chosen.connect(self.use_checkpoint)
            return view

        return self._page("epochs_view", make)

    def toggle_epochs(self, checked: bool | None = None) -> None:
        """Show the epochs of the training run opened last (View ▸ Training run epochs), or go back."""
        if self.epochs_view is None:
            self.epochs_action.setChecked(False)
            self.open_training_run()
            return
        self._toggle(self.epochs_view, checked)

    def open_training_run(self, path: str | Path | None = None) -> None:
        """Open a training run folder in the checkpoint comparison view (File ▸ Open training run…)."""
        if not path:
            path = QFileDialog.getExistingDirectory(self, "Open a training run folder",
                                                    str(self.settings.value("last_run_folder", "")))
            if not path:
                return
        path = Path(path).expanduser()
        if not RunFolder.is_run(path):
            self.messages.error(f"{path} is not a training run folder (no config.json)")
            return
        view = self._ensure_epochs_view()
        if view is None:
            return
        self.settings.setValue("last_run_folder", str(path))
        self._show_page(view)
        view.open_run(path)

    def use_checkpoint(self, checkpoint: str, epoch: int) -> None:
        """Make ``checkpoint`` (an epoch of a run) the weights of the run kind's backend for the next run
        (:data:`protolens.services.run_kinds.RUN_KINDS`: prototype-guided or ldvc weights, the patch-selection
        ``selector``); the result's provenance records it (weights file and sha256)."""
        from protolens.core.errors import ProtolensError
        from protolens.services.run_kinds import DEFAULT_MODEL, RUN_KINDS, run_kind

        folder = Path(checkpoint).parent
        try:  # a checkpoint outside a run folder (moved, or chosen before the run existed): the prototype ViT's
            kind = run_kind(folder) if RunFolder.is_run(folder) else RUN_KINDS[DEFAULT_MODEL]
        except ProtolensError as exc:
            self.messages.error(f"epoch {epoch} not used: {exc}")
            return
        panel, backend = self.backend_panel, kind.backend
        index = panel.combo.findData(backend)
        entry = next((e for e in self.registry.entries() if e.id == backend), None)
        if index < 0 or entry is None or not entry.available:
            self.messages.error(f"the {backend} backend is not installed: epoch {epoch} not used")
            return
        panel.combo.setCurrentIndex(index)  # shows its form and weights row (backend_changed)
        if kind.weights_param is None:
            panel.set_weights_path(str(checkpoint))
        else:
            panel.form.set_values({**panel.form.values(), kind.weights_param: str(checkpoint)})
            panel.params_changed.emit(panel.form.values())
        self.messages.show_message(f"{backend} now uses epoch {epoch}: {checkpoint}", "info")

    def open_train_dialog(self) -> None:
        """Model ▸ Train prototype ViT…: the training dialog (one per window; it stays while training)."""
        if self.train_dialog is None:
            from protolens.gui.train_dialog import TrainDialog

            self.train_dialog = TrainDialog(self.segmenter, self.jobs, self.settings, parent=self,
                                            allow_random_weights=self.controller.allow_random_weights)
            self.train_dialog.compare_requested.connect(self.open_training_run)
            self.train_dialog.finished_training.connect(lambda summary: self.messages.show_message(
                f"training finished: {summary.run_dir} has {summary.epoch} epochs (Compare epochs… in the Train "
                "dialog, or File ▸ Open training run…)", "info"))
        self.train_dialog.show()
        self.train_dialog.raise_()
        self.train_dialog.activateWindow()
