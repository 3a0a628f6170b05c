"""The one place where errors become CLI output and exit codes, for both commands.

L{run_cli} runs a click group without click's own exception handling:
L{JumpError}s print their message and hint and exit with their code (with
C{--json}, also as one JSON C{error} event on standard output: C{code},
C{message}, C{hint} and, for a denial, C{rule}), click's usage errors keep
click's output, and anything else is reported as an internal error without a
traceback (unless the debug variable is set).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

import click

from shared.errors import ExitCode, JumpError, render_error
from shared.text import printable


def wants_json(args: list[str]) -> bool:
    """Whether the command line asks for JSON output (C{--json} before any C{--} CMD)."""
    if "--" in args:
        args = args[: args.index("--")]
    return "--json" in args


def run_cli(group: click.Group, program: str, debug_env: str, argv: list[str] | None) -> NoReturn:
    """Run C{group} as C{program} and exit with the status it (or its error) gives."""
    try:
        result: Any = group.main(args=argv, prog_name=program, standalone_mode=False)
    except JumpError as error:
        click.echo(render_error(program, error), err=True)
        if wants_json(sys.argv[1:] if argv is None else argv):
            click.echo(json.dumps({"event": "error", **error.to_json()}, separators=(",", ":")))
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        click.echo(f"{program}: aborted", err=True)
        sys.exit(ExitCode.FAILURE)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except SystemExit:
        raise
    except Exception as error:  # a bug: say so, without a traceback unless asked
        if os.environ.get(debug_env):
            raise
        click.echo(
            f"{program}: internal error: {type(error).__name__}: {printable(str(error))}"
            f" (set {debug_env}=1 for details)",
            err=True,
        )
        sys.exit(ExitCode.INTERNAL)
    sys.exit(result if isinstance(result, int) else ExitCode.OK)
