"""The `tltool` command line: a thin shell over the Python API.

TensorFlow is imported inside the commands that need it, never at module top,
so `tltool --help`, `tltool backbones` and `tltool recipes` answer at once.
User errors (TltoolError) print one line and exit with their code; anything
else is a bug and keeps its traceback. The group is `tltool.cli.group`; each
module here adds its commands to it.
"""

from tltool.cli import data, evaluation, recipes, training  # noqa: F401  (each adds its commands)
from tltool.cli.group import cli


def main() -> None:
    cli(prog_name="tltool")


__all__ = ["cli", "main"]
