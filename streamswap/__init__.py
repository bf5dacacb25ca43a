"""streamswap: real-time face swapping for live video."""

__version__ = "0.1.0"
