"""Kiln server: a local job server that runs the engines and serves their results over HTTP."""

from core import __version__

__all__ = ["__version__"]
