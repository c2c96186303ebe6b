"""Errors the loading package raises; each carries a message meant for the user, not a traceback."""

from __future__ import annotations


class GGUFImportError(Exception):
    """A GGUF file could not be imported: missing, not a GGUF, corrupt, or unsupported."""


class ModelNotFoundError(Exception):
    """A model spec named nothing this machine has: no such file, folder or cached repo."""
