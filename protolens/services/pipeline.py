"""Tiling options shared by every command of the prototype-guided pipeline (arXiv 2512.19957, step 3)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from protolens.core.errors import ParamError

DEFAULT_PHOTO_SIZE = (3072, 2048)
"""(width, height) a quadrat is resized to, aspect ignored (the paper; an earlier run used 2048 x 2048)."""


def parse_photo_size(text: str) -> tuple[int, int]:
    """``"3072x2048"`` -> (width, height) in pixels. Raises ParamError for another form or a side < 1."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if match is None or min(int(match.group(1)), int(match.group(2))) < 1:
        raise ParamError(f"photo size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 3072x2048")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class Tiling:
    """How a quadrat becomes tile tokens (arXiv 2512.19957, step 3).

    Attributes
    ----------
    photo_size : (int, int)
        (width, height) the photo is resized to, aspect ignored; default 3072 x 2048.
    crop : int
        Side of the non-overlapping square crops in resized pixels; default 64 (48 x 32 crops).
    crop_input : int
        Side each crop is resized to before the backbone; default 518 (224 or 112 on a laptop).
    """

    photo_size: tuple[int, int] = DEFAULT_PHOTO_SIZE
    crop: int = 64
    crop_input: int = 518

    def __post_init__(self) -> None:
        width, height = self.photo_size
        if self.crop < 1 or self.crop_input < 1:
            raise ParamError(f"crop {self.crop} and crop input {self.crop_input} must be >= 1 px")
        if width % self.crop or height % self.crop:
            raise ParamError(f"photo size {width}x{height} is not a multiple of the crop size {self.crop}")

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the crop grid: (height // crop, width // crop)."""
        return self.photo_size[1] // self.crop, self.photo_size[0] // self.crop

    @classmethod
    def parse(cls, photo_size: str, crop: int, crop_input: int) -> Tiling:
        """From CLI option values; raises ParamError."""
        return cls(parse_photo_size(photo_size), crop, crop_input)

    def to_json(self) -> dict[str, Any]:
        return {"photo_size": list(self.photo_size), "crop": self.crop, "crop_input": self.crop_input,
                "grid": list(self.grid)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tiling:
        return cls(tuple(data["photo_size"]), int(data["crop"]), int(data["crop_input"]))  # type: ignore[arg-type]
