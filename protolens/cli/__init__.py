"""The headless twin: ``protolens`` commands over the services layer (typer).

Every command prints one line per failed file and a one-line summary; a :class:`ProtolensError`
that stops a command prints ``error: ...`` and exits with status 1.
"""

from __future__ import annotations

import sys

import typer

from protolens.core.errors import ProtolensError

app = typer.Typer(name="protolens", no_args_is_help=True, add_completion=False,
                  help="See and correct what vision transformers segment.")


def _register() -> None:
    from protolens.cli import (  # noqa: F401 - commands register themselves
        attention,
        backends,
        bank,
        compare,
        epochs,
        evaluate,
        explain,
        export,
        gui,
        prototypes,
        results,
        segment,
        species,
        tokens,
        train,
        weights,
    )


def _is_click_error(exc: BaseException) -> bool:
    """A click usage error, from click itself or from the copy of click that typer bundles (whose classes are
    not click's, so ``isinstance(exc, click.ClickException)`` misses them)."""
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__)


def main() -> None:
    """Console-script entry point."""
    _register()
    try:
        code = app(standalone_mode=False)
    except ProtolensError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        if _is_click_error(exc):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        raise
    sys.exit(code if isinstance(code, int) else 0)
