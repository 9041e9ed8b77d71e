"""The `tltool` group: its options, its error handling, and the helpers its commands share.

TensorFlow is imported inside the commands that need it, never at module top,
so `tltool --help`, `tltool backbones` and `tltool recipes` answer at once.
User errors (TltoolError) print one line and exit with their code; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os

import click

from tltool import __version__
from tltool.errors import TltoolError


class Group(click.Group):
    """Turns TltoolError into `error: ...` and the error's exit code."""

    def invoke(self, ctx):
        from tltool.errors import EXIT_INTERRUPTED, Interrupted

        try:
            return super().invoke(ctx)
        except Interrupted as e:
            click.echo(str(e), err=True)
            ctx.exit(e.exit_code)
        except TltoolError as e:
            for line in str(e).splitlines():
                click.echo(f"error: {line}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tltool")
@click.option("--verbose", "-v", is_flag=True, help="Show TensorFlow's own log lines (or set TLTOOL_DEBUG=1).")
def cli(verbose):
    """Transfer learning for image classification: a folder of images in,
    a per-class report and a serving model out.

    \b
    Quick start:
      tltool fit data/ --backbone resnet50
      tltool backbones            # what you can fine-tune
      tltool recipes              # how you can fine-tune it
      tltool plan --backbone resnet50 --recipe fine-tune-top
    """
    if verbose:
        os.environ["TLTOOL_DEBUG"] = "1"


def load_tensorflow() -> None:
    from tltool.console import load_tensorflow as load

    load()


def require_paths(*paths: str) -> None:
    """Cheap checks before TensorFlow loads: every named path exists."""
    for path in paths:
        if not os.path.exists(path):
            raise TltoolError(f"{path}: no such file or folder")
