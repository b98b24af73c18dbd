"""``protolens backends``: list backends, their availability and parameters."""

from __future__ import annotations

import typer

from protolens.cli import app
from protolens.cli.common import registry
from protolens.core.errors import BackendUnavailableError


@app.command("backends")
def list_backends(check: bool = typer.Option(False, "--check", help="Import each plugin to verify it loads.")) -> None:
    """List discovered backends (plugins/*/plugin.toml and the protolens.backends entry points)."""
    reg = registry()
    for entry in reg.entries():
        if check and entry.available:
            try:
                reg.create(entry.id)
            except BackendUnavailableError:
                pass
        state = "available" if entry.available else f"UNAVAILABLE: {entry.error}"
        name = entry.manifest.name if entry.manifest else "?"
        version = entry.manifest.version if entry.manifest else "?"
        typer.echo(f"{entry.id} {version}  {name}  [{state}]  ({entry.origin})")
        for spec in entry.manifest.params if entry.manifest else ():
            typer.echo(f"    {spec.cli_flag} ({spec.type}, default {spec.default}): {spec.help}")
