"""The `streamswap` command line: parse, load config, hand over to one command module.

Each command lives in `streamswap/commands/<name>.py` with `HELP` (one line),
`add_arguments(parser)` and `run(args, ctx) -> int`. This module holds no business logic.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence

from streamswap import __version__
from streamswap.errors import StreamswapError
from streamswap.logs import setup_logging

if TYPE_CHECKING:  # the config (YAML, every settings module) loads when a command asks for it
    from streamswap.config import Config

# Order is the order of `streamswap --help`.
COMMANDS: list[str] = ["run", "demo", "swap-image", "bench", "serve", "models", "engines", "triton", "doctor"]

log = logging.getLogger(__name__)


@dataclass
class CommandContext:
    """What every command gets besides its own arguments."""

    config_path: str | None
    overrides: dict[str, Any] = field(default_factory=dict)
    debug: bool = False

    def config(self, **more: Any) -> Config:
        """The effective config: defaults ← file ← global flags ← `more` (dotted keys)."""
        from streamswap.config import load_config

        return load_config(self.config_path, {**self.overrides, **more})


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that reports a usage error as one line, and whose arguments can be
    added when it is first used (`populate`), so `streamswap --help` or a typo in one
    command does not build every command's options (the bench options import OpenCV)."""

    def __init__(self, *args: Any, populate: Callable[[argparse.ArgumentParser], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._populate = populate

    def _populated(self) -> None:
        populate, self._populate = self._populate, None
        if populate is not None:
            populate(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        self._populated()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._populated()
        return super().format_usage()

    def format_help(self) -> str:
        self._populated()
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="streamswap",
        description="Real-time face swapping for live video: webcam, RTSP/RTMP or file in; "
        "virtual camera, RTMP stream or file out.",
        epilog="Run `streamswap COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"streamswap {__version__}")
    parser.add_argument(
        "-c", "--config", metavar="FILE",
        help="YAML config file (default: $STREAMSWAP_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--models-dir", metavar="DIR", help="folder holding model files (overrides models.dir)"
    )
    parser.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default: INFO)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMANDS:
        module = importlib.import_module(f"streamswap.commands.{name.replace('-', '_')}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP, populate=module.add_arguments)
        cmd.set_defaults(_module=module, _parser=cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the command's parser, whose --help lists what it takes
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    setup_logging("DEBUG" if args.debug else args.log_level)
    if args.command is None:
        parser.print_help()
        return 2
    overrides: dict[str, Any] = {}
    if args.models_dir:
        overrides["models.dir"] = args.models_dir
    ctx = CommandContext(config_path=args.config, overrides=overrides, debug=args.debug)
    try:
        code = int(args._module.run(args, ctx) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in an "Exception ignored" at exit
        return code
    except BrokenPipeError:
        # The reader went away (`streamswap models list | head -1`): nothing left to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by a closed pipe
    except StreamswapError as exc:
        if args.debug:
            log.exception("failed")
        print(f"streamswap {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user error: say so and how to see more
        if args.debug:
            raise
        print(
            f"streamswap {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(run with --debug for the traceback and please report it)",
            file=sys.stderr,
        )
        return 1
