"""Helpers shared by CLI commands."""

from __future__ import annotations

import functools

from protolens.models.registry import Registry


@functools.cache
def registry() -> Registry:
    """The backends discovered once per process."""
    return Registry.discover()


def params_help() -> str:
    """Every backend's options, for the help text of commands that take them."""
    lines = ["Backend options (pass after --backend NAME):"]
    for entry in registry().entries():
        if entry.manifest is None:
            continue
        lines.append(f"\n\n{entry.id}:")
        for spec in entry.manifest.params:
            extra = f" one of {', '.join(map(str, spec.choices))}" if spec.choices else ""
            bounds = f" [{spec.minimum}..{spec.maximum}]" if spec.minimum is not None or spec.maximum is not None else ""
            lines.append(f"\n\n  {spec.cli_flag} {spec.type.upper()}{bounds}{extra} (default {spec.default}): {spec.help}")
    return "".join(lines)
