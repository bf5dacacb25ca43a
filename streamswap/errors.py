"""Errors a user can cause (`StreamswapError`: the CLI prints the message as one line and
exits 2), and device faults (`DeviceError`: the GPU, its driver or its memory failed —
nothing the user gave was wrong; exit code 3, so a supervisor can tell them apart)."""

from streamswap.redact import redact_text


class StreamswapError(Exception):
    """Base of every user-facing error: the message says what was wrong and what to do.
    Addresses in it are shown with their secrets masked (stream keys, passwords), since the
    message goes to the terminal, the log and API answers."""

    exit_code = 2

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact_text(a) if isinstance(a, str) else a for a in args))


class ConfigError(StreamswapError):
    """A configuration key or value is invalid; the message names its full path."""


class ModelError(StreamswapError):
    """A model file is missing, fails verification, or does not match its contract."""


class DownloadError(ModelError):
    """A model download failed (network, HTTP status, size or hash mismatch)."""


class BackendUnavailable(StreamswapError):
    """An inference backend or execution provider that was asked for cannot be used here."""


class InputError(StreamswapError):
    """An input file, image or stream cannot be read or has no usable content."""


class NoFaceError(InputError):
    """A source or target image contains no detectable face."""


class Busy(StreamswapError):
    """Too much of this kind of work is waiting already (e.g. source faces to prepare);
    nothing was wrong with the request: the same request succeeds a moment later. The
    control API answers it 503 with Retry-After."""


class OutputError(StreamswapError):
    """An output (file, virtual camera, stream) cannot be opened or written."""


class DeviceError(Exception):
    """A device fault (a CUDA call failed: out of device memory, a bad launch, a lost
    GPU). Not a user error: outside the StreamswapError tree, with its own exit code."""

    exit_code = 3
