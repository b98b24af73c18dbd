"""Helpers shared by CLI commands: the registry, and command-line options made from a manifest's parameters.

A backend's parameters are declared once, in its ``plugin.toml`` (:mod:`protolens.core.params`); commands
that expose them as named options (``protolens attention``) build those options from the
:class:`~protolens.core.params.ParamSpec` list with :func:`with_backend_options`, so flags, help texts,
defaults, bounds and choices are never declared a second time in the CLI.

A ``text`` parameter (a class list) is given as a FILE whose UTF-8 text becomes the value
(``--classes classes.txt``; :func:`protolens.core.params.read_text_file`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from protolens.core.errors import BackendUnavailableError
from protolens.core.params import ParamSpec, read_text_file
from protolens.models.registry import Registry
from protolens.services.segment import drain

_PYTHON_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool}
_INLINE_CHOICES = 40
"""Choices whose ``[a|b|c]`` metavar is at most this long are shown inline; longer lists go into the help."""


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
            if spec.type == "text":
                default = "empty" if not spec.default else "\\n".join(spec.default.splitlines())
                lines.append(f"\n\n  {spec.cli_flag} FILE (a UTF-8 text file whose text is the value; default "
                             f"{default}): {spec.help}")
                continue
            extra = f" one of {', '.join(map(str, spec.choices))}" if spec.choices else ""
            bounds = f" [{spec.minimum}..{spec.maximum}]" if spec.minimum is not None or spec.maximum is not None else ""
            lines.append(f"\n\n  {spec.cli_flag} {spec.type.upper()}{bounds}{extra} (default {spec.default}): {spec.help}")
    return "".join(lines)


def backend_specs(backend_id: str) -> tuple[ParamSpec, ...]:
    """The parameters ``backend_id`` declares in its manifest (read without importing the plugin).

    Returns an empty tuple when the manifest cannot be read: the command is still registered and reports the
    backend's error (:class:`~protolens.core.errors.BackendUnavailableError`) when it runs.
    """
    try:
        return registry().manifest(backend_id).params
    except BackendUnavailableError:
        return ()


def _option_text(spec: ParamSpec) -> tuple[str, str | None]:
    """(help text, metavar) of ``spec``: its manifest help plus its bounds or choices."""
    text = spec.help
    metavar = None
    if spec.type == "choice":
        inline = "[" + "|".join(map(str, spec.choices)) + "]"
        if len(inline) <= _INLINE_CHOICES:
            metavar = inline
        else:
            metavar = "<choice>"
            text += " One of: " + ", ".join(map(str, spec.choices)) + "."
    elif spec.type == "text":
        metavar = "FILE"
        text += " Give a UTF-8 text file; its text is the value."
    elif spec.minimum is not None or spec.maximum is not None:
        low = spec.minimum if spec.minimum is not None else "-inf"
        high = spec.maximum if spec.maximum is not None else "inf"
        text += f" Range {low} to {high}."
    return text, metavar


def spec_option(spec: ParamSpec, aliases: Sequence[str] = (), panel: str | None = None) -> inspect.Parameter:
    """A keyword-only parameter whose default is the typer option for ``spec``.

    The option is ``spec.cli_flag`` (``--long-side``; bool: ``--flag/--no-flag``) plus ``aliases`` (``-m``),
    defaults to ``spec.default`` (shown in ``--help``) and converts its value with ``spec.coerce``: a wrong
    type, a value out of bounds or not among the choices raises :class:`~protolens.core.errors.ParamError`,
    which the CLI prints as one ``error:`` line (exit status 1), as for ``protolens segment``.

    A ``text`` parameter takes a FILE (metavar ``FILE``) whose UTF-8 text becomes the value
    (:func:`~protolens.core.params.read_text_file`; a missing file raises ParamError "... no such file"). Its
    option defaults to None (click converts defaults too, and the default is text, not a file), which
    :func:`with_backend_options` replaces by ``spec.default``.
    """
    text, metavar = _option_text(spec)
    if spec.type == "text":

        def read_file(path: str) -> str:
            return read_text_file(spec, path)

        option = typer.Option(None, spec.cli_flag, *aliases, help=text, parser=read_file, metavar=metavar,
                              show_default=False, rich_help_panel=panel)
    elif spec.type == "bool":
        option = typer.Option(spec.default, f"{spec.cli_flag}/--no-{spec.cli_flag[2:]}", *aliases, help=text,
                              show_default=True, rich_help_panel=panel)
    else:
        option = typer.Option(spec.default, spec.cli_flag, *aliases, help=text, parser=spec.coerce,
                              metavar=metavar, show_default=True, rich_help_panel=panel)
    return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=_PYTHON_TYPES.get(spec.type, str))


def with_backend_options(func: Callable[..., Any], specs: Sequence[ParamSpec], *,
                         aliases: Mapping[str, Sequence[str]] | None = None,
                         panel: str | None = None) -> Callable[..., Any]:
    """A typer command calling ``func`` with one option per parameter of ``specs`` in ``**params``.

    Parameters
    ----------
    func : callable
        The command: typer arguments and options of its own (they keep their place; the backend options follow
        its positional arguments), plus ``**params`` that receives the backend values by parameter name.
    specs : sequence of ParamSpec
        A manifest's parameters (:func:`backend_specs`), in the order ``--help`` lists them.
    aliases : mapping of str to sequence of str, optional
        Extra option names by parameter name, e.g. ``{"model": ("-m",)}``.
    panel : str, optional
        ``--help`` section of the backend options.

    Returns
    -------
    callable
        A wrapper of ``func`` with the combined signature; register it with ``app.command(name)``.

    Raises
    ------
    ValueError
        A parameter of ``specs`` has the name of one of ``func``'s own parameters.
    """
    signature = inspect.signature(func, eval_str=True)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    clash = sorted({p.name for p in own} & {s.name for s in specs})
    if clash:
        raise ValueError(f"backend parameter(s) {', '.join(clash)} clash with options of {func.__name__}")
    positional = [p for p in own if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    keyword = [p for p in own if p.kind is inspect.Parameter.KEYWORD_ONLY]
    options = [spec_option(s, (aliases or {}).get(s.name, ()), panel) for s in specs]
    parameters = [*positional, *options, *keyword]

    texts = {s.name: s.default for s in specs if s.type == "text"}

    @functools.wraps(func)
    def command(**values: Any) -> Any:
        for name, default in texts.items():
            if values.get(name) is None:
                values[name] = default
        return func(**values)

    command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters if p.annotation is not p.empty}
    return command


def run_with_bar(generator: Generator[Any, None, Any], name: str) -> Any:
    """Drain a progress generator behind a transient rich bar on stderr; return its value.

    Reports mentioning "out of memory" (a halved batch, a fall-back to the CPU) are also printed as
    ``warning:`` lines, so they stay on screen after the bar goes.
    """
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(name, total=1.0)

        def on_progress(report: Any) -> None:
            bar.update(task, completed=report.fraction, description=report.text[:60] or name)
            if "out of memory" in report.text:
                bar.console.print(f"warning: {report.text}", markup=False, highlight=False, soft_wrap=True)

        return drain(generator, on_progress)
