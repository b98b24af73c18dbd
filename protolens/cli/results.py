"""``protolens results``: list, delete and pick the current one of the results stored for photos."""

from __future__ import annotations

from pathlib import Path

import typer

from protolens.cli import app
from protolens.core.errors import ParamError, ProtolensError
from protolens.core.imageio import expand_paths
from protolens.core.store import ResultEntry, ResultStore
from protolens.services.annotations import photo_meta

MIN_PREFIX = 6
"""Hex digits a key prefix needs at least (keys have 16)."""

results_app = typer.Typer(name="results", no_args_is_help=True, add_completion=False,
                          help="List, delete and pick the current one of the results stored for photos.")
app.add_typer(results_app, name="results")


def resolve_key(entries: list[ResultEntry], given: str, photo: str = "the photo") -> str:
    """The stored key ``given`` names: a whole key, or a unique prefix of at least :data:`MIN_PREFIX` hex digits.

    Raises
    ------
    ParamError
        ``given`` is too short or not hex, names no stored result of ``photo``, or several.
    """
    prefix = given.strip().lower()
    if len(prefix) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in prefix):
        raise ParamError(f"key {given!r}: give a result key or a prefix of at least {MIN_PREFIX} hex digits "
                         f"(see `protolens results list`)")
    matches = sorted({e.key for e in entries if e.key.startswith(prefix)})
    if not matches:
        raise ParamError(f"{photo} has no result {given} (see `protolens results list`)")
    if len(matches) > 1:
        raise ParamError(f"key {given} is ambiguous for {photo}: {', '.join(matches)}")
    return matches[0]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@results_app.command("list")
def list_results(
    paths: list[Path] = typer.Argument(..., help="Photos and folders of photos (not recursive)."),
) -> None:
    """One line per stored result: photo, key, backend@version, weights, params, created, current.

    Only results of the photo's present content are listed (a photo edited since has none). A photo
    without results prints nothing; a summary goes to stderr.
    """
    store = ResultStore.from_environment()
    photos = expand_paths(paths)
    listed = with_results = failed = 0
    for photo in photos:
        try:
            entries = store.list_results(photo, sha256=photo_meta(photo).sha256)
        except ProtolensError as exc:
            typer.echo(f"error: {exc}", err=True)
            failed += 1
            continue
        for entry in entries:
            typer.echo(f"{photo.name}\t{entry.line()}")
        listed += len(entries)
        with_results += bool(entries)
    extra = f", {failed} failed" if failed else ""
    typer.echo(f"protolens results: {_plural(listed, 'result')} of {_plural(with_results, 'photo')} "
               f"({len(photos)} read{extra})", err=True)
    if photos and failed == len(photos):
        raise typer.Exit(1)


@results_app.command("rm")
def remove(
    photo: Path = typer.Argument(..., help="The photo whose results to delete."),
    keys: list[str] = typer.Option([], "--key", "-k", help="Result key or unique prefix (>= 6 hex); repeatable."),
    all_but_current: bool = typer.Option(False, "--all-but-current", help="Delete every result but the current."),
) -> None:
    """Delete stored results of a photo (and their files); one line per deleted result or error."""
    if not keys and not all_but_current:
        raise ParamError("say what to delete: --key KEY (repeatable) or --all-but-current")
    store = ResultStore.from_environment()
    meta = photo_meta(photo)
    entries = store.list_results(photo, sha256=meta.sha256)
    chosen: list[str] = [e.key for e in entries if all_but_current and not e.current]
    errors = 0
    for given in keys:
        try:
            key = resolve_key(entries, given, photo.name)
        except ParamError as exc:
            typer.echo(f"error: {exc}", err=True)
            errors += 1
            continue
        chosen += [key] if key not in chosen else []
    titles = {e.key: e.record.title() for e in entries}
    deleted = 0
    for key in chosen:
        try:
            store.delete_result(meta, key)
        except (KeyError, ProtolensError) as exc:
            typer.echo(f"error: {photo.name}: {exc.args[0] if isinstance(exc, KeyError) else exc}", err=True)
            errors += 1
            continue
        deleted += 1
        typer.echo(f"deleted {key}\t{titles.get(key, '')}")
    left = len(store.list_results(photo, sha256=meta.sha256))
    typer.echo(f"protolens results rm: {photo.name}: deleted {deleted}, {_plural(left, 'result')} left"
               + (f", {errors} failed" if errors else ""), err=True)
    if deleted == 0 and errors:
        raise typer.Exit(1)


@results_app.command("current")
def current(
    photo: Path = typer.Argument(..., help="The photo."),
    key: str = typer.Option(..., "--key", "-k", help="Result key or unique prefix (>= 6 hex digits)."),
) -> None:
    """Mark a stored result current: the one the GUI shows first and ``protolens export`` exports."""
    store = ResultStore.from_environment()
    meta = photo_meta(photo)
    entries = store.list_results(photo, sha256=meta.sha256)
    chosen = resolve_key(entries, key, photo.name)
    try:
        store.set_current(meta, chosen)
    except KeyError as exc:  # deleted in the meantime
        raise ParamError(str(exc.args[0])) from None
    title = next(e.record.title() for e in entries if e.key == chosen)
    typer.echo(f"current {chosen}\t{title}")
