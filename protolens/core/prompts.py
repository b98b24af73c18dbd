"""Class lists for text-prompted segmentation: one class per line, synonyms after ``;``, and CLIP's prompt templates.

A class list is plain text the user types (GUI) or keeps in a file (CLI ``--classes FILE``)::

    # cover classes of a moss quadrat
    Trifolium repens; white clover
    bare soil; soil
    moss

Each line is one class; its first entry is the class name (used for the label map, the per-class heatmap and
matching to the project's classes), every entry is a synonym whose text embedding competes on its own: the
class's probability is the max over its synonyms (SCLIP, wangf3014/SCLIP ``clip_segmentor.py``:
``postprocess_result``; METHODS.md §5 step 4).

numpy-free and torch-free (``protolens.core``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from protolens.core.errors import ParamError

RESERVED_NAME = "background"
"""Label 0 of every label map; not a class the user may prompt for (pixels below the threshold get it)."""

IMAGENET_TEMPLATES: tuple[str, ...] = (
    'a bad photo of a {}.', 'a photo of many {}.', 'a sculpture of a {}.', 'a photo of the hard to see {}.',
    'a low resolution photo of the {}.', 'a rendering of a {}.', 'graffiti of a {}.',
    'a bad photo of the {}.', 'a cropped photo of the {}.', 'a tattoo of a {}.', 'the embroidered {}.',
    'a photo of a hard to see {}.', 'a bright photo of a {}.', 'a photo of a clean {}.',
    'a photo of a dirty {}.', 'a dark photo of the {}.', 'a drawing of a {}.', 'a photo of my {}.',
    'the plastic {}.', 'a photo of the cool {}.', 'a close-up photo of a {}.',
    'a black and white photo of the {}.', 'a painting of the {}.', 'a painting of a {}.',
    'a pixelated photo of the {}.', 'a sculpture of the {}.', 'a bright photo of the {}.',
    'a cropped photo of a {}.', 'a plastic {}.', 'a photo of the dirty {}.',
    'a jpeg corrupted photo of a {}.', 'a blurry photo of the {}.', 'a photo of the {}.',
    'a good photo of the {}.', 'a rendering of the {}.', 'a {} in a video game.', 'a photo of one {}.',
    'a doodle of a {}.', 'a close-up photo of the {}.', 'a photo of a {}.', 'the origami {}.',
    'the {} in a video game.', 'a sketch of a {}.', 'a doodle of the {}.', 'a origami {}.',
    'a low resolution photo of a {}.', 'the toy {}.', 'a rendition of the {}.', 'a photo of the clean {}.',
    'a photo of a large {}.', 'a rendition of a {}.', 'a photo of a nice {}.', 'a photo of a weird {}.',
    'a blurry photo of a {}.', 'a cartoon {}.', 'art of a {}.', 'a sketch of the {}.', 'a embroidered {}.',
    'a pixelated photo of a {}.', 'itap of the {}.', 'a jpeg corrupted photo of the {}.',
    'a good photo of a {}.', 'a plushie {}.', 'a photo of the nice {}.', 'a photo of the small {}.',
    'a photo of the weird {}.', 'the cartoon {}.', 'art of the {}.', 'a drawing of the {}.',
    'a photo of the large {}.', 'a black and white photo of a {}.', 'the plushie {}.',
    'a dark photo of a {}.', 'itap of a {}.', 'graffiti of the {}.', 'a toy {}.', 'itap of my {}.',
    'a photo of a cool {}.', 'a photo of a small {}.', 'a tattoo of the {}.',
)
"""The 80 ImageNet prompt templates of CLIP (Radford et al., arXiv 2103.00020; openai/CLIP notebook
``Prompt_Engineering_for_ImageNet.ipynb``), ``{}`` standing for the class name. Copied as data from
``open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES`` (open_clip 3.3), whose import would pull torch into
``protolens.core``; a test checks the two lists are equal, in order."""


@dataclass(frozen=True)
class ClassPrompt:
    """One class of a class list.

    Attributes
    ----------
    name : str
        The class name: the first entry of its line (``"Trifolium repens"``).
    synonyms : tuple of str
        Every name of the line, the class name first (``("Trifolium repens", "white clover")``); each is
        encoded with every template and the class takes the max probability over them.
    """

    name: str
    synonyms: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.synonyms or self.synonyms[0] != self.name:
            raise ParamError(f"class {self.name!r}: its synonyms must start with the class name")


def _entries(line: str) -> list[str]:
    out: list[str] = []
    for entry in line.split(";"):
        entry = " ".join(entry.split())  # trim, and collapse inner runs of whitespace
        if entry and entry.casefold() not in {e.casefold() for e in out}:
            out.append(entry)
    return out


def parse_class_list(text: str) -> list[ClassPrompt]:
    """Read a class list: one class per line, synonyms after ``;``.

    Parameters
    ----------
    text : str
        The list. Blank lines and lines starting with ``#`` are skipped; entries are trimmed (inner runs of
        whitespace become one space); only ``;`` separates synonyms (commas belong to names, e.g.
        ``"Carex, sedges"`` is one name); a synonym repeated on its line (ignoring case) is kept once.

    Returns
    -------
    list of ClassPrompt
        In line order.

    Raises
    ------
    ParamError
        No class at all; a class name or synonym given twice across lines (ignoring case), naming both
        lines; ``background`` used as a name or synonym (it is label 0 of every label map).
    """
    prompts: list[ClassPrompt] = []
    seen: dict[str, int] = {}  # casefolded synonym -> 1-based line number
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        entries = _entries(line)
        if not entries:  # a line of only ';'
            continue
        for entry in entries:
            key = entry.casefold()
            if key == RESERVED_NAME:
                raise ParamError(f"class list line {number}: {entry!r} is reserved for pixels below the "
                                 "probability threshold; name the class otherwise (e.g. 'bare ground')")
            if key in seen:
                what = "class name" if entry == entries[0] else "synonym"
                raise ParamError(f"class list line {number}: {what} {entry!r} was already given on line "
                                 f"{seen[key]}; give each name once")
        for entry in entries:
            seen[entry.casefold()] = number
        prompts.append(ClassPrompt(entries[0], tuple(entries)))
    if not prompts:
        raise ParamError("give at least one class: one class per line, synonyms after ';' "
                         "(e.g. 'Trifolium repens; white clover')")
    return prompts


def format_class_list(prompts: Iterable[ClassPrompt]) -> str:
    """The text of a class list: one line per class, ``"; "`` between its synonyms, a final newline.

    The inverse of :func:`parse_class_list` (``parse_class_list(format_class_list(p)) == p`` for any list it
    returned).
    """
    return "".join("; ".join(p.synonyms) + "\n" for p in prompts)


def class_names(prompts: Iterable[ClassPrompt]) -> list[str]:
    """The class names of ``prompts``, in order (label ``i + 1`` of a label map is ``names[i]``)."""
    return [p.name for p in prompts]
