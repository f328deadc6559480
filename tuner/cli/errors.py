"""Every user error of the command line as one line on stderr, exit code 2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from tuner.errors import TunerError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class TunerGroup(typer.core.TyperGroup):
    """Prints every user error as one line on stderr, exit code 2 (tracebacks are for bugs).

    User errors are the TunerErrors the verbs raise and the usage errors of the command line
    itself (a bad value, an unknown option or verb), which Typer would draw as a boxed panel.
    The group's own options are parsed in make_context; a verb's options, in invoke.
    """

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> typer.Context:
        with one_line_errors(None):
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: typer.Context) -> Any:
        with one_line_errors(ctx):
            return super().invoke(ctx)


@contextmanager
def one_line_errors(ctx: typer.Context | None) -> Iterator[None]:
    """TunerError and usage errors -> `error: ...` and exit 2; Ctrl-C -> one line, exit 130."""
    try:
        yield
    except TunerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except KeyboardInterrupt:
        # A verb that handles its own interrupt (run) has said more; this is any other moment.
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except typer.TyperException as exc:
        # Click's exceptions: Typer ships its own copy of Click, whose errors derive from this.
        if type(exc).__name__ == "NoArgsIsHelpError":
            raise  # a bare `tuner`: Typer has printed the help already and exits 2 itself
        message = exc.format_message()
        typer.echo(f"error: {message[:1].lower()}{message[1:]}", err=True)
        typer.echo(
            f"(run '{_command_path(getattr(exc, 'ctx', None), ctx)} --help' for usage)", err=True
        )
        raise typer.Exit(EXIT_USER_ERROR) from None


def _command_path(error_ctx: typer.Context | None, group_ctx: typer.Context | None) -> str:
    """`tuner VERB` (or `tuner`) for the help hint of a usage error."""
    if error_ctx is not None:
        return error_ctx.command_path
    # Click raises some parse errors (an option missing its value) without a context; the
    # group has already chosen the verb whose options it was parsing.
    if group_ctx is not None and group_ctx.invoked_subcommand:
        return f"{group_ctx.command_path} {group_ctx.invoked_subcommand}"
    return group_ctx.command_path if group_ctx is not None else "tuner"
