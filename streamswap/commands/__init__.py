"""One module per `streamswap` command (see cli.py for what each module provides)."""


def examples(*lines: str) -> str:
    """The "examples:" epilog of a --help: one command per line, kept as written."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)
