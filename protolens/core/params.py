"""Typed backend parameters, declared in a plugin manifest, from which the GUI form and CLI options are made.

A manifest (``plugin.toml``) declares each parameter as a table::

    [params.long_side]
    type = "int"          # int | float | bool | choice | str | text
    default = 518
    min = 56
    max = 2240
    step = 14             # GUI spin-box step (optional)
    label = "Long side"   # GUI label (optional)
    help = "Resize the image so its longer side has this many pixels."
    choices = [...]       # for type = "choice"

:func:`make_params` validates values against the specs and returns a frozen dataclass instance,
so a backend reads ``params.long_side`` with the right type and within bounds.

A ``text`` parameter is a multi-line string (a class list, one class per line): the GUI edits it in a
multi-line box, and on the command line its value is a FILE whose UTF-8 text becomes the value
(``--classes classes.txt``, :func:`read_text_file`), so results and their keys hold the text itself, not a path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protolens.core.errors import ParamError

PARAM_TYPES = ("int", "float", "bool", "choice", "str", "text")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class ParamSpec:
    """One typed, bounded parameter of a backend.

    Attributes
    ----------
    name : str
        Python identifier (``long_side``); the CLI flag is ``--long-side``.
    type : str
        One of ``int``, ``float``, ``bool``, ``choice``, ``str``, ``text`` (multi-line string; on the command
        line given as a file, see :func:`read_text_file`).
    default : Any
        Default value (already valid).
    minimum, maximum : float or None
        Inclusive bounds for ``int`` and ``float``.
    choices : tuple
        Allowed values for ``choice``.
    label, help : str
        GUI label and tooltip / CLI help.
    step : float or None
        GUI step for numeric spin boxes.
    """

    name: str
    type: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    label: str = ""
    help: str = ""
    step: float | None = None

    @property
    def cli_flag(self) -> str:
        """The command-line option for this parameter, e.g. ``--long-side``."""
        return "--" + self.name.replace("_", "-")

    @property
    def display_label(self) -> str:
        """Label for forms: the declared label or the name in words."""
        return self.label or self.name.replace("_", " ").capitalize()

    def coerce(self, value: Any) -> Any:
        """Convert ``value`` (native or a command-line string) to this type and check the bounds.

        Raises
        ------
        ParamError
            Wrong type, out of bounds, or not among the choices.
        """
        try:
            converted = self._convert(value)
        except (TypeError, ValueError):
            raise ParamError(f"{self.cli_flag}: {value!r} is not a valid {self.type}") from None
        if self.type in ("int", "float"):
            if self.minimum is not None and converted < self.minimum:
                raise ParamError(f"{self.cli_flag}: {converted} is below the minimum {self.minimum}")
            if self.maximum is not None and converted > self.maximum:
                raise ParamError(f"{self.cli_flag}: {converted} is above the maximum {self.maximum}")
        if self.type == "choice" and converted not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise ParamError(f"{self.cli_flag}: {converted!r} is not one of {allowed}")
        return converted

    def _convert(self, value: Any) -> Any:
        if self.type == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if self.type == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(value)
        if self.type == "choice":
            for choice in self.choices:
                if value == choice or str(value) == str(choice):
                    return choice
            return value
        if self.type == "text":
            if isinstance(value, bytes):
                raise ValueError(value)
            return str(value).replace("\r\n", "\n").replace("\r", "\n")
        return str(value)


def parse_param_specs(table: Mapping[str, Mapping[str, Any]]) -> list[ParamSpec]:
    """Build specs from a manifest's ``[params.*]`` tables, in declaration order.

    Raises
    ------
    ParamError
        Unknown type, missing default, invalid default, or a name that is not an identifier.
    """
    specs = []
    for name, entry in table.items():
        if not name.isidentifier():
            raise ParamError(f"parameter name {name!r} is not an identifier")
        kind = entry.get("type")
        if kind not in PARAM_TYPES:
            raise ParamError(f"parameter {name!r}: type must be one of {', '.join(PARAM_TYPES)}")
        if "default" not in entry:
            raise ParamError(f"parameter {name!r} has no default")
        spec = ParamSpec(
            name=name, type=kind, default=entry["default"], minimum=entry.get("min"),
            maximum=entry.get("max"), choices=tuple(entry.get("choices", ())), label=entry.get("label", ""),
            help=entry.get("help", ""), step=entry.get("step"),
        )
        if kind == "choice" and not spec.choices:
            raise ParamError(f"parameter {name!r} of type choice lists no choices")
        spec = dataclasses.replace(spec, default=spec.coerce(spec.default))
        specs.append(spec)
    return specs


def make_params(specs: Sequence[ParamSpec], values: Mapping[str, Any] | None = None,
                *, class_name: str = "Params") -> Any:
    """Validate ``values`` against ``specs`` and return a frozen dataclass instance.

    Missing values take their defaults. Unknown names raise :class:`ParamError`, naming the known ones.
    """
    values = dict(values or {})
    unknown = sorted(set(values) - {s.name for s in specs})
    if unknown:
        known = ", ".join(s.cli_flag for s in specs) or "none"
        raise ParamError(f"unknown parameter(s) {', '.join(unknown)}; this backend takes: {known}")
    fields = [(s.name, object, field(default=None)) for s in specs]
    cls = dataclasses.make_dataclass(class_name, fields, frozen=True)
    return cls(**{s.name: s.coerce(values[s.name]) if s.name in values else s.default for s in specs})


def params_to_dict(params: Any) -> dict[str, Any]:
    """Plain dict of a params dataclass instance (JSON-serialisable values)."""
    return dataclasses.asdict(params)


def read_text_file(spec: ParamSpec, path: str | Path) -> str:
    """The value of the ``text`` parameter ``spec`` given on the command line as ``path``: the file's UTF-8 text.

    A leading byte-order mark is dropped and line endings become ``\\n`` (:meth:`ParamSpec.coerce`), so the
    same list gives the same value (and result key) on every platform.

    Raises
    ------
    ParamError
        ``path`` is empty, does not exist, is not a file, cannot be read or is not UTF-8 text; the message
        names the option and the path.
    """
    if not str(path).strip():
        raise ParamError(f"{spec.cli_flag} needs a FILE (a UTF-8 text file)")
    file = Path(path).expanduser()
    if not file.exists():
        raise ParamError(f"{spec.cli_flag}: {path}: no such file")
    if not file.is_file():
        raise ParamError(f"{spec.cli_flag}: {path}: not a file")
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except OSError as error:
        raise ParamError(f"{spec.cli_flag}: {path}: cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise ParamError(f"{spec.cli_flag}: {path}: not UTF-8 text") from None
    return spec.coerce(text)


def parse_cli_args(specs: Sequence[ParamSpec], args: Sequence[str]) -> dict[str, Any]:
    """Parse ``--flag value`` / ``--flag=value`` / ``--flag`` / ``--no-flag`` pairs against ``specs``.

    Returns the validated values by parameter name. The value of a ``text`` parameter is a file path whose
    UTF-8 text becomes the value (:func:`read_text_file`). Raises :class:`ParamError` on an unknown flag,
    a missing value, an invalid one or an unreadable file.
    """
    by_flag = {s.cli_flag: s for s in specs}
    out: dict[str, Any] = {}
    items = list(args)
    i = 0
    while i < len(items):
        token = items[i]
        if not token.startswith("--"):
            raise ParamError(f"unexpected argument {token!r}")
        flag, has_inline, inline = token.partition("=")
        positive = by_flag.get("--" + flag[5:]) if flag.startswith("--no-") else None
        negated = positive is not None and positive.type == "bool" and flag not in by_flag
        spec = positive if negated else by_flag.get(flag)
        if spec is None:
            known = ", ".join(by_flag) or "none"
            raise ParamError(f"unknown option {flag}; this backend takes: {known}")
        if negated and has_inline:
            raise ParamError(f"{flag} takes no value")
        if spec.type == "bool" and not has_inline:
            out[spec.name] = not negated
            i += 1
            continue
        if has_inline:
            raw = inline
            i += 1
        elif i + 1 < len(items):
            raw = items[i + 1]
            i += 2
        else:
            raise ParamError(f"{flag} needs a value")
        out[spec.name] = read_text_file(spec, raw) if spec.type == "text" else spec.coerce(raw)
    return out
