"""The `streamswap` command line: parse, load config, hand over to one command module.

Each command lives in `streamswap/commands/<name>.py` with `HELP` (one line), `EXAMPLES`
(lines shown under "examples:" in its --help), `add_arguments(parser)` and
`run(args, ctx) -> int`. This module holds no business logic.

The global options (-c/--config, --models-dir, --log-level, --debug) are accepted before
or after the command (`streamswap run -c x.yaml`, `streamswap models list --debug`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence

from streamswap import __version__
from streamswap.commands import examples
from streamswap.errors import DeviceError, StreamswapError
from streamswap.logs import setup_logging

if TYPE_CHECKING:  # the config (YAML, every settings module) loads when a command asks for it
    from streamswap.config import Config

# Order is the order of `streamswap --help`.
COMMANDS: list[str] = [
    "run",
    "demo",
    "swap-image",
    "bench",
    "serve",
    "models",
    "engines",
    "triton",
    "cameras",
    "doctor",
]

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

    def file_keys(self) -> set[str]:
        """The top-level keys the config file sets (empty without a file): tells a value
        the user chose from a built-in default."""
        from pathlib import Path

        from streamswap.config import CONFIG_ENV, read_yaml

        path = self.config_path or os.environ.get(CONFIG_ENV)
        return set(read_yaml(Path(path))) if path else set()


class _Formatter(argparse.HelpFormatter):
    """Wraps prose as usual but keeps lines that start indented (examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for line in text.splitlines():
            if not line.strip() or line.startswith("  "):
                out.append(indent + line)
            else:
                out.append(textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent))
        return "\n".join(out)


def add_global_options(parser: argparse.ArgumentParser, *, after_command: bool = False) -> None:
    """The options every command takes. After the command they default to "not given"
    (SUPPRESS), so a value given there overrides one given before it, and no value given
    there leaves the top-level default alone."""
    default = (lambda value: argparse.SUPPRESS) if after_command else (lambda value: value)
    group: Any = parser.add_argument_group("global options (before or after the command)") if after_command else parser
    group.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=default(None),
        help="YAML config file (default: $STREAMSWAP_CONFIG, else built-in defaults)",
    )
    group.add_argument(
        "--models-dir",
        metavar="DIR",
        default=default(None),
        help="folder holding model files (overrides models.dir and $STREAMSWAP_MODELS_DIR)",
    )
    group.add_argument(
        "--log-level",
        default=default("INFO"),
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default: INFO)",
    )
    group.add_argument("--debug", action="store_true", default=default(False), help="show tracebacks and debug logs")


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [
        choice
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in dict.fromkeys(action.choices.values())
    ]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that reports a usage error as one line, and whose arguments can be
    added when it is first used (`populate`), so `streamswap --help` or a typo in one
    command does not build every command's options (the bench options import OpenCV)."""

    def __init__(
        self, *args: Any, populate: Callable[[argparse.ArgumentParser], None] | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)
        self._populate = populate

    def _populated(self) -> None:
        populate, self._populate = self._populate, None
        if populate is not None:
            populate(self)
            # A command's own actions (`models list`) take the global options too.
            pending = _subparsers(self)
            while pending:
                child = pending.pop()
                add_global_options(child, after_command=True)
                pending.extend(_subparsers(child))

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
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
        epilog="Run `streamswap COMMAND --help` for a command's options and examples. The options "
        "above are also accepted after the command.\n\n"
        + examples(
            "streamswap demo                                # a real swap into demo.mp4, offline",
            "streamswap run -s face.jpg -i /dev/video0 -o vcam://",
            "streamswap run -s face.jpg -i in.mp4 -o out.mp4 --size 1280x720",
            "streamswap serve -c configs/desktop-gpu.yaml   # daemon + control page on http://127.0.0.1:8008/",
            "streamswap cameras                             # which cameras are there",
            "streamswap doctor -c configs/desktop-gpu.yaml  # can this machine run that config?",
        ),
    )
    parser.add_argument("--version", action="version", version=f"streamswap {__version__}")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMANDS:
        module = importlib.import_module(f"streamswap.commands.{name.replace('-', '_')}")
        cmd = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            epilog=examples(*module.EXAMPLES),
            populate=module.add_arguments,
        )
        add_global_options(cmd, after_command=True)
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
    except DeviceError as exc:
        if args.debug:
            log.exception("device fault")
        print(
            f"streamswap {args.command}: device fault: {exc} (the GPU, its driver or its memory "
            "failed, not your input: check `nvidia-smi` and the system log, then run again)",
            file=sys.stderr,
        )
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
