"""Kiln core: engines that turn prompts and photos into fields, and the shared asset path."""

__version__ = "0.1.0"
