"""Semantic segmentation data sets: photos with label maps (class ids), from a VOC-style folder.

A VOC-style folder (PASCAL VOC 2012 layout, and what ``protolens export --format png`` plus a copy of the
photos gives)::

    root/JPEGImages/<name>.jpg              the photos (any supported image extension, ``.jpg`` first)
    root/SegmentationClass/<name>.png       label maps: pixel value = class id, 255 = ignore. Indexed
                                            (palette) PNGs as in VOC, or 8-bit grey (``<name>.labels.png`` too)
    root/labels.txt                         optional: "<id> <name>" lines (protolens' export format)
    root/class_names.txt                    optional: one name per line, line i names id i
    root/ImageSets/Segmentation/<split>.txt optional: one <name> per line (train, val, ...)

Without a class list the 21 PASCAL VOC classes are used. With split files, the data set is the names they
list; without, every photo of ``JPEGImages``. A listed photo whose mask is missing, unreadable, of another
size than the photo, RGB, or holding ids that are not classes is reported in ``skipped`` by name with the
reason and left out: it never stops a run.

Projects corrected in protolens are read by :func:`protolens.services.segdata.project_dataset`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from protolens.core.errors import ImageReadError, ParamError, ProtolensError
from protolens.core.formats.png import read_label_png
from protolens.core.imageio import image_size, is_image_path, read_image
from protolens.core.seg_metrics import confusion_matrix

IGNORE = 255
#: The PASCAL VOC 2012 classes, index = id.
VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]
_IMAGE_ORDER = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


@dataclass(frozen=True)
class SegSample:
    """One photo and its label map file (``mask`` None: unlabelled, every pixel ignore)."""

    image: Path
    mask: Path | None
    name: str


@dataclass
class SegDataset:
    """Photos with label maps and the class names.

    Attributes
    ----------
    classes : list of str
        Index = class id; ``classes[0]`` is background; id 255 is ignore (never listed).
    samples : list of SegSample
        The usable samples, in order.
    skipped : list of (str, str)
        (name, reason) of samples left out: missing, corrupt or mismatched masks, missing photos.
    root : Path or None
        The data set folder (VOC root or photo folder); ``split`` reads ``root/ImageSets/Segmentation``.
    unlabelled : list of str
        Names of photos without any mask (a protolens folder's photos not corrected yet); not errors.
    """

    classes: list[str]
    samples: list[SegSample]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    root: Path | None = None
    unlabelled: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def splits(self) -> list[str]:
        """Names of the split files under ``root/ImageSets/Segmentation`` (sorted; empty if none)."""
        folder = self._split_folder()
        return sorted(p.stem for p in folder.glob("*.txt")) if folder is not None and folder.is_dir() else []

    def _split_folder(self) -> Path | None:
        return None if self.root is None else self.root / "ImageSets" / "Segmentation"

    def split(self, name: str) -> SegDataset:
        """The samples listed in ``ImageSets/Segmentation/<name>.txt``, in the file's order.

        ``skipped`` keeps the entries of the listed names only. Raises :class:`ParamError` when the split
        file does not exist (the message lists the splits there are).
        """
        folder = self._split_folder()
        path = folder / f"{name}.txt" if folder is not None else None
        if path is None or not path.is_file():
            raise ParamError(f"no split {name!r}: {path or 'this data set has no ImageSets/Segmentation'} "
                             f"not found (splits: {', '.join(self.splits()) or 'none'})")
        return self.subset(read_split_file(path))

    def subset(self, names: Iterable[str]) -> SegDataset:
        """The samples called ``names`` (in that order; unknown names are ignored), same classes and root."""
        wanted = list(dict.fromkeys(names))
        by_name = {s.name: s for s in self.samples}
        keep = set(wanted)
        return replace(self, samples=[by_name[n] for n in wanted if n in by_name],
                       skipped=[s for s in self.skipped if s[0] in keep],
                       unlabelled=[n for n in self.unlabelled if n in keep])

    def holdout(self, fraction: float, seed: int = 0) -> tuple[SegDataset, SegDataset]:
        """(train, validation): a seeded random ``fraction`` of the samples held out for validation.

        At least one sample is held out when ``0 < fraction`` and there are two or more samples; both parts
        keep the samples' order. Raises :class:`ParamError` for a fraction outside [0, 1).
        """
        if not 0 <= fraction < 1:
            raise ParamError(f"the validation fraction must be in [0, 1), not {fraction}")
        names = [s.name for s in self.samples]
        count = round(len(names) * fraction)
        if fraction > 0 and len(names) >= 2:
            count = min(max(count, 1), len(names) - 1)
        held = set(random.Random(seed).sample(names, count))
        return (self.subset([n for n in names if n not in held]),
                replace(self.subset([n for n in names if n in held]), skipped=[], unlabelled=[]))

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``i`` as arrays.

        Returns
        -------
        image : np.ndarray
            (h, w, 3) uint8 RGB, row 0 at the top (EXIF orientation applied).
        labels : np.ndarray
            (h, w) uint8 class ids, 255 ignore; all 255 for an unlabelled sample.

        Raises
        ------
        ImageReadError
            The photo or the mask cannot be read, or their sizes differ (names the file).
        """
        sample = self.samples[i]
        image = read_image(sample.image)
        if sample.mask is None:
            return image, np.full(image.shape[:2], IGNORE, np.uint8)
        labels = read_labels(sample.mask)
        if labels.shape != image.shape[:2]:
            raise ImageReadError(sample.mask, f"label map is {labels.shape}, the photo {image.shape[:2]}")
        return image, labels


def read_labels(path: str | Path) -> np.ndarray:
    """A label map file as (h, w) uint8 ids (grey or palette PNG: pixel value = id).

    Raises :class:`ImageReadError` (missing, corrupt, RGB or 16-bit values above 255), naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "mask file missing")
    try:
        return read_label_png(path)
    except ProtolensError as exc:
        raise ImageReadError(path, str(exc).removeprefix(f"{path}: ")) from None


def check_mask(image: Path, mask: Path, n_classes: int) -> str | None:
    """Why ``mask`` cannot be used with ``image`` (unreadable, other size, ids >= n_classes), or None.

    Decodes the mask and reads the photo's header only.
    """
    try:
        labels = read_labels(mask)
        size = image_size(image)
    except ImageReadError as exc:
        return f"{exc.path.name}: {exc.reason}"
    if tuple(labels.shape) != tuple(size):
        return (f"mask is {labels.shape[1]}x{labels.shape[0]} pixels (width x height), "
                f"the photo {size[1]}x{size[0]}")
    ids = np.unique(labels)
    bad = [int(i) for i in ids if i != IGNORE and i >= n_classes]
    if bad:
        return f"mask holds class ids {bad[:10]} beyond the {n_classes} classes"
    return None


def read_split_file(path: str | Path) -> list[str]:
    """Names listed in a split file: first word of each non-empty line (VOC ``train.txt``)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.split()[0] for line in lines if line.strip()]


def read_class_list(path: str | Path) -> list[str]:
    """Class names from ``labels.txt`` ("<id> <name>" lines) or a one-name-per-line file.

    ``labels.txt``: id 255 (ignore) is dropped; ids without a line are named ``unused-<id>``; a missing id 0
    is "background". A plain list: line i names id i. Raises :class:`ParamError` for an empty or malformed
    file (duplicate id, id outside 0..254 in a numbered file).
    """
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamError(f"{path}: cannot read the class list ({exc})") from None
    if not lines:
        raise ParamError(f"{path}: the class list is empty")
    numbered = all(line.split(maxsplit=1)[0].isdigit() and len(line.split(maxsplit=1)) == 2 for line in lines)
    if not numbered:
        return lines
    names: dict[int, str] = {}
    for line in lines:
        key, name = line.split(maxsplit=1)
        class_id = int(key)
        if class_id == IGNORE:
            continue
        if class_id > 254 or class_id in names:
            raise ParamError(f"{path}: class id {class_id} is {'repeated' if class_id in names else 'over 254'}")
        names[class_id] = name.strip()
    names.setdefault(0, "background")
    return [names.get(i, f"unused-{i}") for i in range(max(names) + 1)]


def parse_class_split(text: str, classes: Sequence[str]) -> list[int]:
    """Class ids of a ``--seen`` / ``--unseen`` option: comma-separated names (or ids).

    Names match exactly, else case-insensitively; a number that is not a name is taken as an id. Repeats are
    dropped, order kept; an empty text gives []. Raises :class:`ParamError` for unknown names or ids (the
    message lists the classes).
    """
    ids: list[int] = []
    lower = {name.lower(): i for i, name in reversed(list(enumerate(classes)))}
    unknown = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if token in classes:
            ids.append(list(classes).index(token))
        elif token.lower() in lower:
            ids.append(lower[token.lower()])
        elif token.isdigit() and int(token) < len(classes):
            ids.append(int(token))
        else:
            unknown.append(token)
    if unknown:
        raise ParamError(f"unknown classes {', '.join(map(repr, unknown))}; the classes are: {', '.join(classes)}")
    return list(dict.fromkeys(ids))


def _voc_classes(root: Path) -> list[str]:
    for name in ("labels.txt", "class_names.txt"):
        if (root / name).is_file():
            return read_class_list(root / name)
    return list(VOC_CLASSES)


def _photos_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    if folder.is_dir():
        order = {ext: i for i, ext in enumerate(_IMAGE_ORDER)}
        paths = [p for p in folder.iterdir() if is_image_path(p) and not p.name.startswith(".")]
        for path in sorted(paths, key=lambda p: order.get(p.suffix.lower(), 99)):
            found.setdefault(path.stem, path)
    return found


def _mask_of(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.png", folder / f"{name}.labels.png"):
        if candidate.is_file():
            return candidate
    return None


def read_voc(root: str | Path) -> SegDataset:
    """A VOC-style folder as a :class:`SegDataset` (see the module docstring for the layout).

    Every mask is decoded once here and checked against its photo's header, so a bad or missing mask is
    in ``skipped`` (name, reason) instead of failing later. Names come from the split files (their union, in
    order) when ``ImageSets/Segmentation/*.txt`` exist, else from ``JPEGImages``; masks without a photo are
    reported too.

    Raises
    ------
    NotADirectoryError
        ``root`` or ``root/JPEGImages`` is not a folder.
    ParamError
        The class list file is malformed.
    """
    root = Path(root)
    if not (root / "JPEGImages").is_dir():
        raise NotADirectoryError(f"{root}: not a VOC-style folder (no JPEGImages/)")
    classes = _voc_classes(root)
    photos = _photos_by_stem(root / "JPEGImages")
    masks = root / "SegmentationClass"
    dataset = SegDataset(classes, [], [], root)
    split_files = dataset.splits()
    if split_files:
        names = list(dict.fromkeys(n for s in split_files for n in read_split_file(
            root / "ImageSets" / "Segmentation" / f"{s}.txt")))
    else:
        names = sorted(photos)
        mask_names = {p.name.removesuffix(".png").removesuffix(".labels") for p in masks.glob("*.png")}
        dataset.skipped += [(n, "no photo in JPEGImages/") for n in sorted(mask_names - set(photos))]
    for name in names:
        image, mask = photos.get(name), _mask_of(masks, name)
        if image is None:
            dataset.skipped.append((name, "no photo in JPEGImages/"))
        elif mask is None:
            dataset.skipped.append((name, f"mask missing: SegmentationClass/{name}.png"))
        elif (reason := check_mask(image, mask, len(classes))) is not None:
            dataset.skipped.append((name, reason))
        else:
            dataset.samples.append(SegSample(image, mask, name))
    return dataset


def label_files(folder: str | Path) -> dict[str, Path]:
    """The label PNGs of ``folder`` by stem: ``<stem>.png`` or ``<stem>.labels.png`` (``.color.png`` skipped).

    A stem with both files keeps ``<stem>.labels.png``. Raises ``NotADirectoryError``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("*.png")):
        name = path.name
        if name.startswith(".") or name.endswith(".color.png"):
            continue
        if name.endswith(".labels.png"):
            found[name.removesuffix(".labels.png")] = path
        else:
            found.setdefault(name.removesuffix(".png"), path)
    return found


@dataclass
class FolderComparison:
    """Predicted vs true label maps of two folders, matched by stem.

    ``confusion`` is (255, 256) int64 over every id 0..254 (column 255: predicted 255); crop it to the data
    set's classes with :func:`protolens.core.seg_metrics.crop_confusion`. ``compared`` lists the stems
    scored; ``skipped`` (stem, reason) the truths without a usable prediction or unreadable files;
    ``extra`` the predictions without a truth (ignored); ``max_id`` the largest class id met (not 255).
    """

    confusion: np.ndarray
    compared: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    max_id: int = 0


def compare_label_folders(pred: str | Path, truth: str | Path) -> FolderComparison:
    """Accumulate the confusion matrix of every truth label map of ``truth`` against ``pred``.

    A truth without a prediction, an unreadable file or a size mismatch is skipped and named; it never
    stops the comparison. Raises ``NotADirectoryError`` for a folder that is not one.
    """
    preds, truths = label_files(pred), label_files(truth)
    result = FolderComparison(np.zeros((255, 256), np.int64), extra=sorted(set(preds) - set(truths)))
    for stem, truth_path in truths.items():
        if stem not in preds:
            result.skipped.append((stem, "no prediction"))
            continue
        try:
            p, t = read_labels(preds[stem]), read_labels(truth_path)
        except ImageReadError as exc:
            result.skipped.append((stem, f"{exc.path.name}: {exc.reason}"))
            continue
        if p.shape != t.shape:
            result.skipped.append((stem, f"prediction is {p.shape[1]}x{p.shape[0]}, truth {t.shape[1]}x{t.shape[0]}"))
            continue
        result.confusion += confusion_matrix(p, t, 255)
        used = np.union1d(np.unique(p), np.unique(t))
        used = used[used != IGNORE]
        result.max_id = max(result.max_id, int(used.max()) if used.size else 0)
        result.compared.append(stem)
    return result
