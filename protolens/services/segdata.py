"""Training data from where users keep it: a VOC-style folder, or a protolens photo folder of corrected masks.

A protolens photo folder becomes a :class:`~protolens.core.segdata.SegDataset` of its photos that have an
edited mask (the label maps the editor saves in the result store, :mod:`protolens.core.annotation`), with the
project's classes (``project.json``): class ids are the project's ids, so the corrected masks are used as
they are. Photos without an edited mask are listed in ``unlabelled`` (not errors); a photo or mask that
cannot be read, or a corrupt sidecar, is reported in ``skipped`` by name with the reason and left out.
Thresholded results that were never edited are not training data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from protolens.core.annotation import SECTION, load_annotation
from protolens.core.errors import ImageReadError, SidecarError
from protolens.core.imageio import scan_images
from protolens.core.labels import IGNORE, load_project
from protolens.core.segdata import SegDataset, SegSample, read_voc
from protolens.core.store import ResultStore
from protolens.services.annotations import photo_meta


def project_classes(names: dict[int, str], max_id: int = 0) -> list[str]:
    """Class list of a project: "background" at 0, the project's names at their ids, gaps "unused-<id>".

    ``max_id`` extends the list to ids found in masks but not named in the project.
    """
    top = max([0, max_id, *names])
    return ["background" if i == 0 else names.get(i, f"unused-{i}") for i in range(top + 1)]


def _edited_mask(store: ResultStore, path: Path) -> tuple[Path | None, int, str | None]:
    """(label map file or None, its largest class id, why it is unusable or None)."""
    try:
        meta = photo_meta(path)
        annotation = load_annotation(store, meta)
        if annotation is None:
            return None, 0, None
        found = store.section(meta.path, SECTION, sha256=meta.sha256)
    except (ImageReadError, SidecarError) as exc:
        return None, 0, str(exc)
    if found is None:
        return None, 0, None
    value, folder = found
    ids = np.unique(annotation.labels)
    ids = ids[ids != IGNORE]
    return folder / str(value["file"]), int(ids.max()) if ids.size else 0, None


def project_dataset(folder: str | Path, store: ResultStore) -> SegDataset:
    """The photos of ``folder`` (non-recursive) with an edited mask in ``store``, as a data set.

    Parameters
    ----------
    folder : str or Path
        A protolens photo folder.
    store : ResultStore
        Where its results and annotations are (``ResultStore.from_environment()`` for the user's).

    Returns
    -------
    SegDataset
        ``samples``: (photo, the store's ``<photo name>.labels.png``, photo file name), natural order;
        ``classes``: :func:`project_classes` of ``project.json`` (ids in masks beyond it named
        ``unused-<id>``); ``skipped``: (file name, reason) of unreadable photos, masks or sidecars;
        ``unlabelled``: file names of photos without an edited mask; ``root``: ``folder``.

    Raises
    ------
    NotADirectoryError
        ``folder`` is not a folder.
    LabelError
        The project file is corrupt.
    """
    folder = Path(folder)
    scan = scan_images(folder)
    project = load_project(store.project_folder(folder))
    dataset = SegDataset([], [], [], folder)
    top = 0
    for path in scan.images:
        mask, max_id, problem = _edited_mask(store, path)
        if problem is not None:
            dataset.skipped.append((path.name, problem))
        elif mask is None:
            dataset.unlabelled.append(path.name)
        else:
            dataset.samples.append(SegSample(path, mask, path.name))
            top = max(top, max_id)
    dataset.classes = project_classes({c.id: c.name for c in project.labels.classes}, top)
    return dataset


def load_dataset(path: str | Path, store: ResultStore | None = None) -> SegDataset:
    """A VOC-style folder (it has ``JPEGImages/``) or else a protolens photo folder, as a data set.

    ``store`` defaults to ``ResultStore.from_environment()``. Raises ``NotADirectoryError`` when ``path``
    is not a folder, :class:`~protolens.core.errors.ParamError` / ``LabelError`` for a corrupt class list.
    """
    path = Path(path)
    if (path / "JPEGImages").is_dir():
        return read_voc(path)
    return project_dataset(path, store if store is not None else ResultStore.from_environment())
