"""Keeping credentials out of reprs, error messages and log lines.

A backend option is secret when its name says so (see :func:`is_secret_option`);
the registry prints such options as ``'***'``, and backends hold secret values
as :class:`Secret`, whose repr never shows them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["REDACTED", "Secret", "is_secret_option", "redacted", "scrub"]

#: What a secret value is shown as.
REDACTED = "***"

#: Option names containing one of these words (in any case) hold secrets.
_SECRET_WORDS = re.compile(r"secret|password|passwd|token|access_key|credential|api_key|private_key", re.IGNORECASE)

#: Values shorter than this are not scrubbed from text: no real credential is
#: that short, and replacing one or two letters everywhere would garble messages.
_SCRUB_MIN_LENGTH = 4


def is_secret_option(name: str) -> bool:
    """Whether a backend option called ``name`` holds a secret.

    Examples
    --------
    >>> is_secret_option("secret_access_key"), is_secret_option("access_key_id"), is_secret_option("root")
    (True, True, False)
    """
    return bool(_SECRET_WORDS.search(name))


def redacted(options: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``options`` in which every secret option's value is ``'***'``, nested mappings too.

    Examples
    --------
    >>> redacted({"s3": {"bucket": "b", "secret_access_key": "wJalr"}})
    {'s3': {'bucket': 'b', 'secret_access_key': '***'}}
    """
    copy: dict[str, Any] = {}
    for name, value in options.items():
        if isinstance(name, str) and is_secret_option(name) and value is not None:
            copy[name] = REDACTED
        elif isinstance(value, Mapping):
            copy[name] = redacted(value)
        else:
            copy[name] = value
    return copy


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each of ``secrets`` replaced by ``'***'``."""
    for secret in secrets:
        if secret and len(secret) >= _SCRUB_MIN_LENGTH:
            text = text.replace(secret, REDACTED)
    return text


class Secret:
    """A credential that pickles but never shows itself in a repr or str.

    Parameters
    ----------
    value
        The secret text; :meth:`reveal` returns it.

    Examples
    --------
    >>> key = Secret("wJalrXUtnFEMI")
    >>> key, str(key), key.reveal()
    (Secret('***'), '***', 'wJalrXUtnFEMI')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a credential must be a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """Return the secret text (pass it to the client that needs it, nowhere else)."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __getstate__(self) -> str:
        return self._value

    def __setstate__(self, state: str) -> None:
        self._value = state
