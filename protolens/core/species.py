"""Species lists for quadrats: the class mapping, the per-quadrat list rule, PlantCLEF CSVs and the F1 evaluation.

Numpy and the standard library only. Sources: arXiv 2512.19957 (the prototype-guided method, METHODS.md §1
step 8, the species list per quadrat) and the PlantCLEF 2025 overview, arXiv 2509.17602 (METHODS.md §1 step 9,
the metric).

Files
-----
Class mapping (``class_index,species_id[,name]``)
    One row per classifier output; ``class_index`` covers 0..C-1 exactly once, species ids are distinct. A header
    row is optional (a first row whose first field is not an integer). Fields after the species id form the name.
Species CSV (``quadrat_id,species_ids[,transect]``)
    The PlantCLEF submission format, also read for truth files. A header row naming the columns is required
    (any order, case-insensitive; a column named ``transect`` is optional, others are ignored). ``species_ids``
    is a list such as ``"[1395807, 1741880]"``; the reader also takes ``1395807;1741880``,
    ``['1395807', '1741880']``, ``[]`` or an empty cell.

Delimiters: a file is comma- or semicolon-delimited; the delimiter is whichever of ``,`` and ``;`` comes first
on its first non-empty line. Files are read as UTF-8 (a byte-order mark is skipped). Blank lines are skipped.
Errors name the file and line (:class:`SpeciesFileError`).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protolens.core.atomic import write_bytes_atomic
from protolens.core.errors import ParamError
from protolens.core.metrics import set_f1

_BAD_ID_CHARS = re.compile(r"[,;\[\]'\"\r\n]")
_SPACED_NUMBERS = re.compile(r"\d+(\s+\d+)+")
PER_QUADRAT_COLUMNS = ("quadrat_id", "transect", "n_pred", "n_truth", "tp", "precision", "recall", "f1")


class SpeciesFileError(ParamError):
    """A class-mapping or species CSV file is missing or malformed; the message names the file and line."""


# --------------------------------------------------------------------------------------------------- reading


def _read_rows(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank row of a ``,``- or ``;``-delimited file (see the module docstring).

    Raises :class:`SpeciesFileError` when the file cannot be read or is not UTF-8.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SpeciesFileError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise SpeciesFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise SpeciesFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    first = next((line for line in text.splitlines() if line.strip()), "")
    seps = [i for i in (first.find(","), first.find(";")) if i >= 0]
    delimiter = first[min(seps)] if seps else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                yield reader.line_num, [cell.strip() for cell in row]
    except csv.Error as exc:
        raise SpeciesFileError(f"{path}:{reader.line_num}: {exc}") from None


class ClassMapping:
    """Classifier output index -> species id (and optional name), read from ``class_index,species_id[,name]``.

    Parameters
    ----------
    species_ids : sequence of str
        ``species_ids[i]`` is the species of class index ``i`` (C entries, distinct, non-empty).
    names : mapping of str to str, optional
        Species id -> display name.
    source : str
        Where the mapping came from (for messages).

    Raises
    ------
    ParamError
        An empty or duplicate species id.
    """

    def __init__(self, species_ids: Sequence[str], names: Mapping[str, str] | None = None, source: str = "") -> None:
        self._ids = tuple(str(s) for s in species_ids)
        where = f"{source}: " if source else ""
        seen: dict[str, int] = {}
        for index, sid in enumerate(self._ids):
            if not sid:
                raise ParamError(f"{where}class {index} has an empty species id")
            if sid in seen:
                raise ParamError(f"{where}classes {seen[sid]} and {index} both map to species {sid}")
            seen[sid] = index
        self._index = seen
        self._names = dict(names or {})
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path) -> ClassMapping:
        """Read a mapping CSV (module docstring). Rows may come in any order.

        Raises
        ------
        SpeciesFileError
            Missing file; a row with fewer than 2 fields, a non-integer or negative index (other than a header
            on the first row), an empty species id, a duplicate index or species id; indices not covering
            0..C-1; no rows at all. Messages name ``file:line``.
        """
        by_index: dict[int, tuple[str, int]] = {}
        names: dict[str, str] = {}
        species_line: dict[str, int] = {}
        for position, (number, row) in enumerate(_read_rows(path)):
            try:
                index = int(row[0])
            except ValueError:
                if position == 0:
                    continue  # header row
                raise SpeciesFileError(f"{path}:{number}: class_index {row[0]!r} is not an integer") from None
            if len(row) < 2 or not row[1]:
                raise SpeciesFileError(f"{path}:{number}: expected class_index,species_id[,name]")
            if index < 0:
                raise SpeciesFileError(f"{path}:{number}: class_index {index} is negative")
            if index in by_index:
                raise SpeciesFileError(f"{path}:{number}: class_index {index} already given on line "
                                       f"{by_index[index][1]}")
            sid = row[1]
            if sid in species_line:
                raise SpeciesFileError(f"{path}:{number}: species {sid} already given on line {species_line[sid]}")
            by_index[index] = (sid, number)
            species_line[sid] = number
            name = ", ".join(cell for cell in row[2:] if cell)  # an unquoted name with commas spans fields
            if name:
                names[sid] = name
        if not by_index:
            raise SpeciesFileError(f"{path}: no class_index,species_id rows")
        missing = sorted(set(range(len(by_index))) - set(by_index))
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise SpeciesFileError(f"{path}: class indices must cover 0..{len(by_index) - 1}; missing {shown}")
        return cls([by_index[i][0] for i in range(len(by_index))], names, source=str(path))

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def species_ids(self) -> tuple[str, ...]:
        """Species id of every class index, in index order."""
        return self._ids

    def species_id(self, index: int) -> str:
        """The species id of class ``index``. Raises :class:`ParamError` outside 0..C-1."""
        if not 0 <= int(index) < len(self._ids):
            raise ParamError(f"class index {index} is outside 0..{len(self._ids) - 1} of {self.source or 'the mapping'}")
        return self._ids[int(index)]

    def index(self, species_id: str) -> int:
        """The class index of ``species_id``. Raises :class:`ParamError` when it is not in the mapping."""
        try:
            return self._index[str(species_id)]
        except KeyError:
            raise ParamError(f"species {species_id} is not in {self.source or 'the mapping'}") from None

    def name(self, species_id: str) -> str | None:
        """The display name of ``species_id``; None when the file gives none or the species is unknown."""
        return self._names.get(str(species_id))


# ----------------------------------------------------------------------------------------------- species rule


@dataclass(frozen=True)
class SpeciesHit:
    """One species of a quadrat's list.

    Attributes
    ----------
    class_index : int
        Classifier output index (map to a species id with :class:`ClassMapping`).
    probability : float
        The highest top-1 probability in [0, 1] any source image gave it.
    sources : tuple of int
        Indices (rows of the probability matrix: stitched images, i.e. kept crops) whose top-1 is this species
        with a probability >= the threshold, ascending; for the fallback hit, the images with the maximum.
    """

    class_index: int
    probability: float
    sources: tuple[int, ...]


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (the maximum is subtracted first) of float ``logits`` along ``axis``.

    Returns float64 for float64 input, else float32; same shape as ``logits``.
    """
    x = np.asarray(logits)
    x = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def species_list(probabilities: np.ndarray, threshold: float) -> list[SpeciesHit]:
    """The species list of one quadrat from its stitched images' class probabilities (arXiv 2512.19957,
    METHODS.md §1 step 8).

    For each image in order: its top-1 class and probability; the species is listed when the probability is
    >= ``threshold`` and it is not listed yet (de-duplicated, order of first acceptance; its ``probability``
    is the maximum over its sources). If no image passes, the list is the single most confident top-1 (ties:
    the first image in order). No cap on the list length.

    Parameters
    ----------
    probabilities : ndarray, shape (n, C), float
        Class probabilities in [0, 1] per stitched image (e.g. :func:`softmax` of the classifier logits).
        ``n = 0`` gives an empty list.
    threshold : float
        Probability in [0, 1]. The reference code takes percent (``prob = 50`` means 0.5); here it is 0.5.

    Returns
    -------
    list of SpeciesHit

    Raises
    ------
    ParamError
        ``threshold`` outside [0, 1] or not finite; ``probabilities`` not 2-D, with no classes, non-finite,
        or outside [0, 1] (logits given by mistake: apply :func:`softmax` first).
    """
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        t = math.nan
    if not 0.0 <= t <= 1.0:
        hint = " (a probability: 0.5, not the reference's percent 50)" if 1.0 < t <= 100.0 else ""
        raise ParamError(f"species threshold must be in [0, 1]{hint}, got {threshold!r}")
    p = np.asarray(probabilities)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ParamError(f"probabilities must have shape (images, classes), got {p.shape}")
    if p.shape[0] == 0:
        return []
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0 + 1e-6:
        raise ParamError("probabilities must be finite and in [0, 1] (apply softmax to logits first)")
    top = np.argmax(p, axis=1)
    conf = p[np.arange(len(p)), top]
    hits: dict[int, list[Any]] = {}
    for image in np.flatnonzero(conf >= t):
        entry = hits.setdefault(int(top[image]), [float(conf[image]), []])
        entry[0] = max(entry[0], float(conf[image]))
        entry[1].append(int(image))
    if not hits:
        best = int(np.argmax(conf))
        cls, prob = int(top[best]), conf[best]
        sources = np.flatnonzero((conf == prob) & (top == cls))
        return [SpeciesHit(cls, float(prob), tuple(int(s) for s in sources))]
    return [SpeciesHit(cls, prob, tuple(src)) for cls, (prob, src) in hits.items()]


# ------------------------------------------------------------------------------------------ species CSV files


def format_species_ids(species_ids: Iterable[str]) -> str:
    """The bracketed list of a submission cell: ``["1395807", "1741880"]`` -> ``"[1395807, 1741880]"``."""
    return "[" + ", ".join(str(s) for s in species_ids) + "]"


def parse_species_ids(text: str) -> tuple[str, ...]:
    """Species ids of one cell: ``,`` or ``;`` separated, brackets, quotes and spaces optional; order and
    duplicates kept. ``""`` and ``"[]"`` give ``()``.

    Raises
    ------
    ValueError
        Ids separated only by spaces (``"[1 2]"``, ambiguous with names) or an empty item (``"1,,2"``).
    """
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    if not body.strip():
        return ()
    ids = []
    for item in re.split(r"[,;]", body):
        sid = item.strip().strip("'\"").strip()
        if not sid:
            raise ValueError(f"empty species id in {text!r}")
        if _SPACED_NUMBERS.fullmatch(sid):
            raise ValueError(f"separate species ids with ',' or ';', not spaces: {text!r}")
        ids.append(sid)
    return tuple(ids)


def write_submission(path: str | Path, rows: Mapping[str, Sequence[str]]) -> None:
    """Write a PlantCLEF submission CSV ``quadrat_id,species_ids`` atomically (csv module, ``,`` delimiter,
    ``\\n`` line ends, UTF-8), one row per quadrat in ``rows`` order, the ids as ``"[1395807, 1741880]"``.

    Raises
    ------
    ParamError
        An empty quadrat id, or an id containing ``, ; [ ] '`` ``"`` or a line break (it would not read back).
    StoreWriteError
        The file cannot be written (nothing is overwritten).
    """
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["quadrat_id", "species_ids"])
    for quadrat, species in rows.items():
        if not str(quadrat).strip() or "\n" in str(quadrat) or "\r" in str(quadrat):
            raise ParamError(f"quadrat id {quadrat!r} cannot be written to {path}")
        bad = [s for s in species if not str(s).strip() or _BAD_ID_CHARS.search(str(s))]
        if bad:
            raise ParamError(f"species id {bad[0]!r} of quadrat {quadrat} cannot be written to {path}")
        writer.writerow([quadrat, format_species_ids(species)])
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))


class SpeciesTable(Mapping[str, tuple[str, ...]]):
    """Quadrat id -> species ids (file order, duplicates kept), read from a prediction or truth CSV.

    Attributes
    ----------
    path : str
        The file read ("" when built in memory).
    transects : dict of str to str, or None
        Quadrat id -> transect, when the file has a ``transect`` column.
    lines : dict of str to int
        Quadrat id -> its line in the file.
    """

    def __init__(self, rows: Mapping[str, Sequence[str]], transects: Mapping[str, str] | None = None,
                 path: str = "", lines: Mapping[str, int] | None = None) -> None:
        self._rows = {str(q): tuple(str(s) for s in ids) for q, ids in rows.items()}
        self.transects = None if transects is None else {str(q): str(t) for q, t in transects.items()}
        self.path = path
        self.lines = dict(lines or {})

    def __getitem__(self, quadrat: str) -> tuple[str, ...]:
        return self._rows[quadrat]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def read_species_csv(path: str | Path) -> SpeciesTable:
    """Read a prediction or truth file ``quadrat_id,species_ids[,transect]`` (module docstring).

    A row with more fields than the header whose ``species_ids`` column is the last one is read as an unquoted
    list (``Q1,[1, 2]``): the surplus fields are joined back with ``,``.

    Raises
    ------
    SpeciesFileError
        Missing file; no header naming ``quadrat_id`` and ``species_ids``; a row with too few or too many fields;
        an empty quadrat id or transect; a quadrat given twice; a malformed species list. Messages name
        ``file:line``.
    """
    rows = _read_rows(path)
    first = next(rows, None)
    if first is None:
        raise SpeciesFileError(f"{path}: empty file (expected a header quadrat_id,species_ids)")
    header = [cell.lower() for cell in first[1]]
    if "quadrat_id" not in header or "species_ids" not in header:
        raise SpeciesFileError(f"{path}:{first[0]}: the first row must be a header naming the columns "
                               f"quadrat_id and species_ids, got {','.join(first[1])!r}")
    q_col, s_col = header.index("quadrat_id"), header.index("species_ids")
    t_col = header.index("transect") if "transect" in header else None
    species: dict[str, tuple[str, ...]] = {}
    transects: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, row in rows:
        if len(row) > len(header) and s_col == len(header) - 1:
            row = [*row[:s_col], ",".join(row[s_col:])]
        if len(row) != len(header):
            hint = " (quote a species list that contains the delimiter)" if len(row) > len(header) else ""
            raise SpeciesFileError(f"{path}:{number}: expected {len(header)} fields, found {len(row)}{hint}")
        quadrat = row[q_col]
        if not quadrat:
            raise SpeciesFileError(f"{path}:{number}: empty quadrat_id")
        if quadrat in species:
            raise SpeciesFileError(f"{path}:{number}: quadrat {quadrat} already given on line {lines[quadrat]}")
        try:
            species[quadrat] = parse_species_ids(row[s_col])
        except ValueError as exc:
            raise SpeciesFileError(f"{path}:{number}: {exc}") from None
        if t_col is not None:
            if not row[t_col]:
                raise SpeciesFileError(f"{path}:{number}: empty transect for quadrat {quadrat}")
            transects[quadrat] = row[t_col]
        lines[quadrat] = number
    return SpeciesTable(species, transects if t_col is not None else None, path=str(path), lines=lines)


# ------------------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class QuadratScore:
    """Scores of one truth quadrat; sets are de-duplicated. ``transect`` is "" without transects."""

    quadrat_id: str
    transect: str
    n_pred: int
    n_truth: int
    tp: int
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class SpeciesEvaluation:
    """Species-list scores against a truth (arXiv 2509.17602; METHODS.md §1 step 9).

    Attributes
    ----------
    f1 : float
        Macro average over the truth's quadrats of the per-quadrat set F1.
    f1_transect : float or None
        Mean per-quadrat F1 within each transect, then mean across transects (the PlantCLEF 2025 score);
        None without transects.
    precision, recall : float
        Macro averages over the truth's quadrats (conventions in :func:`evaluate_species`).
    mean_predicted, mean_truth : float
        Mean number of distinct species per quadrat in the prediction (over the truth's quadrats, a missing
        one counting 0) and in the truth.
    n_quadrats, n_transects : int
        Truth quadrats scored; transects (0 without).
    missing : tuple of str
        Truth quadrats absent from the prediction (scored as empty predictions).
    extra : tuple of str
        Predicted quadrats not in the truth (ignored).
    per_quadrat : tuple of QuadratScore
        In the truth's order.
    """

    f1: float
    f1_transect: float | None
    precision: float
    recall: float
    mean_predicted: float
    mean_truth: float
    n_quadrats: int
    n_transects: int
    missing: tuple[str, ...]
    extra: tuple[str, ...]
    per_quadrat: tuple[QuadratScore, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (``per_quadrat`` as a list of dicts)."""
        data = asdict(self)
        data["missing"], data["extra"] = list(self.missing), list(self.extra)
        data["per_quadrat"] = [asdict(score) for score in self.per_quadrat]
        return data


def _score(quadrat: str, transect: str, predicted: Iterable[str], truth: Iterable[str]) -> QuadratScore:
    p, g = set(predicted), set(truth)
    tp = len(p & g)
    precision = tp / len(p) if p else float(not g)
    recall = tp / len(g) if g else float(not p)
    return QuadratScore(quadrat, transect, len(p), len(g), tp, precision, recall, set_f1(p, g))


def evaluate_species(predicted: Mapping[str, Iterable[str]], truth: Mapping[str, Iterable[str]],
                     transects: Mapping[str, str] | None = None) -> SpeciesEvaluation:
    """Score species lists against a truth (PlantCLEF 2025, arXiv 2509.17602; METHODS.md §1 step 9).

    Per truth quadrat, on de-duplicated sets P (predicted) and G (truth): F1 = 2|P∩G| / (|P| + |G|),
    precision = |P∩G| / |P|, recall = |P∩G| / |G|. An empty set scores 1.0 when the other is empty too and 0.0
    otherwise (so both empty gives precision = recall = F1 = 1.0; an empty prediction against a non-empty truth
    gives 0.0 for all three). A truth quadrat missing from ``predicted`` counts as an empty prediction; predicted
    quadrats not in the truth are ignored (listed in ``extra``).

    Parameters
    ----------
    predicted, truth : mapping of quadrat id to species ids
        E.g. :class:`SpeciesTable` from :func:`read_species_csv`.
    transects : mapping of quadrat id to transect, optional
        Default: ``truth.transects`` when ``truth`` is a :class:`SpeciesTable` read with a transect column.
        Every truth quadrat needs one.

    Raises
    ------
    ParamError
        The truth has no quadrats, or a truth quadrat has no transect.
    """
    if not truth:
        raise ParamError("the truth has no quadrats to score")
    if transects is None and isinstance(truth, SpeciesTable):
        transects = truth.transects
    scores = []
    for quadrat, species in truth.items():
        if transects is not None and quadrat not in transects:
            raise ParamError(f"truth quadrat {quadrat} has no transect")
        transect = transects[quadrat] if transects is not None else ""
        scores.append(_score(quadrat, transect, predicted.get(quadrat, ()), species))
    f1_transect = None
    groups: dict[str, list[float]] = {}
    if transects is not None:
        for score in scores:
            groups.setdefault(score.transect, []).append(score.f1)
        f1_transect = math.fsum(math.fsum(v) / len(v) for v in groups.values()) / len(groups)

    def mean(values: Iterable[float]) -> float:
        return math.fsum(values) / len(scores)

    return SpeciesEvaluation(
        f1=mean(s.f1 for s in scores), f1_transect=f1_transect,
        precision=mean(s.precision for s in scores), recall=mean(s.recall for s in scores),
        mean_predicted=mean(s.n_pred for s in scores), mean_truth=mean(s.n_truth for s in scores),
        n_quadrats=len(scores), n_transects=len(groups),
        missing=tuple(q for q in truth if q not in predicted), extra=tuple(q for q in predicted if q not in truth),
        per_quadrat=tuple(scores))


def write_per_quadrat(path: str | Path, evaluation: SpeciesEvaluation) -> None:
    """Write the per-quadrat table (:data:`PER_QUADRAT_COLUMNS`, scores to 6 decimals) as CSV atomically.

    Raises :class:`~protolens.core.errors.StoreWriteError` when the file cannot be written.
    """
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PER_QUADRAT_COLUMNS)
    for s in evaluation.per_quadrat:
        writer.writerow([s.quadrat_id, s.transect, s.n_pred, s.n_truth, s.tp,
                         f"{s.precision:.6f}", f"{s.recall:.6f}", f"{s.f1:.6f}"])
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))
