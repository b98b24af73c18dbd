"""Kinds of training runs and how the checkpoint comparison shows their epochs (the epochs view, ``compare-epochs``).

A run folder's ``config.json`` names its kind (``"model"``): ``prototype-vit`` (arXiv 2512.19957: the
``prototype-guided`` backend's received attention, attention only), ``ldvc`` (arXiv 2403.08426: the ``ldvc``
backend's class maps and label map) or ``patch-selector`` (arXiv 2503.10252: the ``patch-selection`` backend with the
epoch as its ``selector``, kept / dropped super-patches). Each kind lists the per-epoch indicators its training
writes into ``epoch_###.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protolens.core.errors import BackendUnavailableError, CheckpointError
from protolens.core.indicators import INDICATORS
from protolens.core.runs import RunFolder

BACKEND = "prototype-guided"
"""The backend whose attention-only path draws every epoch's map of a prototype-ViT run."""
ATTENTION_ONLY: dict[str, Any] = {"classifier": ""}
"""Parameters forced on every epoch run of a prototype-ViT run: no classifier, only the received attention."""
OPTIONAL_PARAMS = ("threshold", "batch_size")
"""Parameters passed to an epoch run only when its backend takes them (``compare-epochs --threshold`` also
draws the masks, whatever the backend)."""


@dataclass(frozen=True)
class RunKind:
    """How the checkpoint comparison shows the epochs of one kind of training run.

    Attributes
    ----------
    model : str
        ``config.json``'s ``"model"`` of such runs.
    backend : str
        The backend id whose result is an epoch's map.
    indicators : tuple of str
        Per-epoch indicator names read from ``epoch_###.json`` ``indicators`` (``loss`` falls back to the
        epoch's mean training loss), in display order.
    params : dict
        Parameters forced on every epoch run.
    weights_param : str or None
        None: the checkpoint is the backend's weights file (``weights_path``); else the name of the backend
        parameter that takes the checkpoint path.
    layers : tuple of str
        Typed result layers (``label_map``, ``regions``) the view can draw over each epoch's map.
    what : str
        What an epoch's map is, for titles and tooltips.
    """

    model: str
    backend: str
    indicators: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)
    weights_param: str | None = None
    layers: tuple[str, ...] = ()
    what: str = "map"

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns of the indicator table (CSV and JSON rows): epoch, the indicators, chosen."""
        return ("epoch", *self.indicators, "chosen")

    def run_inputs(self, checkpoint: Path, params: Mapping[str, Any] | None = None,
                   known: Sequence[str] | None = None) -> tuple[dict[str, Any], Path | None]:
        """(backend parameters, weights path) of one epoch's run under ``checkpoint``.

        ``params`` (the user's) are overridden by :attr:`params` and the checkpoint parameter; those of
        :data:`OPTIONAL_PARAMS` the backend does not take (``known``, its parameter names) are left out.
        """
        values = dict(params or {})
        if known is not None:
            values = {k: v for k, v in values.items() if k not in OPTIONAL_PARAMS or k in known}
        values.update(self.params)
        if self.weights_param is None:
            return values, checkpoint
        values[self.weights_param] = str(checkpoint)
        return values, None


RUN_KINDS: dict[str, RunKind] = {
    "prototype-vit": RunKind("prototype-vit", BACKEND, INDICATORS, dict(ATTENTION_ONLY),
                             what="received attention"),
    "ldvc": RunKind("ldvc", "ldvc", ("loss", "miou", "miou_seen", "miou_unseen", "hiou", "pixel_accuracy"),
                    layers=("label_map",), what="class probability"),
    "patch-selector": RunKind("patch-selector", "patch-selection", ("loss", "agreement_iou"),
                              weights_param="selector", layers=("regions",), what="super-patch rank"),
}
"""Run kind (``config.json`` ``"model"``) -> how its epochs are compared (see the module docstring)."""
DEFAULT_MODEL = "prototype-vit"
"""The kind of a run whose ``config.json`` names no model (written before run kinds existed)."""


def run_kind(run: RunFolder | str | Path) -> RunKind:
    """The :class:`RunKind` of ``run`` (its ``config.json`` ``"model"``; none given: prototype-vit).

    Raises CheckpointError for a missing or corrupt ``config.json`` and for a kind not in :data:`RUN_KINDS`
    (naming the kinds there are).
    """
    folder = run if isinstance(run, RunFolder) else RunFolder(run)
    model = folder.config().get("model", DEFAULT_MODEL)
    kind = RUN_KINDS.get(str(model))
    if kind is None:
        raise CheckpointError(f"{folder.path}: a run of kind {model!r} cannot be compared by epoch; "
                              f"known kinds: {', '.join(RUN_KINDS)}")
    return kind


def check_backend(registry: Any, kind: RunKind) -> None:
    """Raise BackendUnavailableError, with a clear message, when ``kind``'s backend is not installed or
    cannot load in ``registry`` (a :class:`~protolens.models.registry.Registry`)."""
    try:
        registry.manifest(kind.backend)
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(f"a {kind.model} run needs the {kind.backend!r} backend, which is not "
                                      f"available: {exc}") from None
