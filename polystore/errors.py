"""The errors polystore raises beyond Python's builtin ones.

Missing and existing paths use the builtin :class:`FileNotFoundError` and
:class:`FileExistsError`; everything here also subclasses the builtin type a
caller would already catch (``KeyError``, ``ValueError``, ``PermissionError``).
"""

from __future__ import annotations

__all__ = [
    "BackendNotFoundError",
    "InvalidPathError",
    "PolystoreError",
    "ReadOnlyError",
    "UnsupportedFormatError",
]


class PolystoreError(Exception):
    """Base class of every error defined by polystore."""


class BackendNotFoundError(PolystoreError, KeyError):
    """No backend is registered under the requested name."""

    def __str__(self) -> str:
        # KeyError quotes its message; read it as a plain sentence instead.
        return str(self.args[0]) if self.args else ""


class InvalidPathError(PolystoreError, ValueError):
    """A path is malformed or escapes the backend's root directory."""


class UnsupportedFormatError(PolystoreError, ValueError):
    """A backend cannot store this kind of data, or at this path's suffix."""


class ReadOnlyError(PolystoreError, PermissionError):
    """A write was attempted on a read-only backend."""
