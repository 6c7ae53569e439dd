"""The `keras-extras` command, also run as `python -m keras_extras`."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage block: the message names the bad argument.
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    """Runs the `keras-extras` command line.

    Args:
        argv: The arguments after the program name; `sys.argv[1:]` by default.

    Returns:
        The exit code.
    """
    from keras_extras import demo

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _Parser(prog="keras-extras", description="keras_extras command line.")
    subparsers = parser.add_subparsers(title="commands", required=True)
    demo.add_parser(subparsers)
    args = parser.parse_args(argv)
    return args.command(args, argv)


if __name__ == "__main__":
    sys.exit(main())
