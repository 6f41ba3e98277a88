"""The obstore side of the s3 backend: one store and thread pool per process, requests, and their errors.

obstore is imported on first use only, so ``import polystore`` stays light.
Every error leaves here as a builtin exception (``FileNotFoundError``,
``PermissionError``, ``ConnectionError``, ...) naming the backend and the
path, with credentials scrubbed and obstore's own chain dropped (it can hold
the server's whole answer).
"""

from __future__ import annotations

import datetime
import errno
import functools
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from polystore.backend import PathLike
from polystore.redaction import REDACTED, Secret, scrub

if TYPE_CHECKING:
    from obstore.store import S3Store

__all__ = ["NoSuchBucketError", "S3Client", "import_obstore", "missing", "taken", "without_userinfo"]

logger = logging.getLogger(__name__)

#: Requests in flight at once for a batch (and for the checks before a save).
CONCURRENCY = 16
#: Attempts at a conditional PUT that the server answers with 409
#: ConditionalRequestConflict (a concurrent create of the same key), and the
#: first pause between them; pauses double, with jitter, up to about 2 s in all.
_CONFLICT_ATTEMPTS = 6
_CONFLICT_PAUSE = 0.05
_CONFLICT = re.compile(r"ConditionalRequestConflict|status code: 409\b")
#: A refusal that obstore reports as a generic error (listings, for one).
_REFUSED = re.compile(r"status code: 40[13]\b")
#: The error code and message in an S3 error body.
_ERROR_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_ERROR_MESSAGE = re.compile(r"<Message>([^<]{1,300})</Message>")
#: The environment variables whose values never appear in a message.
_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
#: The first and the longest pause between two retries of a request.
_FIRST_BACKOFF = datetime.timedelta(seconds=0.1)
_MAX_BACKOFF = datetime.timedelta(seconds=2)

T = TypeVar("T")


@functools.cache
def import_obstore() -> ModuleType:
    """Import and return obstore, or raise ImportError with the install hint."""
    try:
        import obstore
        import obstore.exceptions
        import obstore.store
    except ImportError as error:
        raise ImportError("the s3 backend needs obstore; install it with: pip install 'polystore[s3]'") from error
    return obstore


class NoSuchBucketError(FileNotFoundError):
    """The bucket itself is missing (not only the object asked for)."""


def missing(path: PathLike, backend: str = "s3") -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, f"{backend} backend: nothing is stored at this path", str(path))


def taken(path: PathLike, backend: str = "s3") -> FileExistsError:
    return FileExistsError(
        errno.EEXIST, f"{backend} backend: path exists; pass overwrite=True to replace it", str(path)
    )


def without_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` part shown as ``***@``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=f"{REDACTED}@{parts.netloc.rsplit('@', 1)[1]}").geturl()


class S3Client:
    """One bucket's obstore store and thread pool, made on first use in each process and shared by its threads.

    It pickles as its settings alone (credentials included, as :class:`Secret`):
    a process that unpickles it makes its own store on first use. ``backend``
    is the name its error messages give (the zarr backend uses it too, for
    arrays in a bucket).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint: str | None,
        region: str | None,
        access_key_id: Secret | None,
        secret_access_key: Secret | None,
        allow_http: bool,
        retry_timeout: float,
        backend: str = "s3",
    ) -> None:
        self.backend = backend
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint
        self.region = region
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.allow_http = allow_http
        self.retry_timeout = retry_timeout
        self._lock = threading.Lock()
        self._made: tuple[int, S3Store, ThreadPoolExecutor] | None = None

    def __repr__(self) -> str:
        return f"S3Client(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def __getstate__(self) -> dict[str, Any]:
        # The store, its threads and the lock stay behind: each process makes its own.
        state = self.__dict__.copy()
        del state["_lock"], state["_made"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._made = None

    def connection(self) -> tuple[S3Store, ThreadPoolExecutor]:
        """The obstore store and the thread pool of this process, made on first use."""
        made = self._made
        if made is None or made[0] != os.getpid():
            with self._lock:
                made = self._made
                if made is None or made[0] != os.getpid():
                    # A forked child makes its own: the parent's threads are not in it.
                    made = (os.getpid(), self._make_store(), ThreadPoolExecutor(CONCURRENCY, "polystore-s3"))
                    self._made = made
        return made[1], made[2]

    def _make_store(self) -> S3Store:
        obstore = import_obstore()
        config: dict[str, Any] = {}
        if self.endpoint is not None:
            config["endpoint"] = self.endpoint
        if self.region is not None:
            config["region"] = self.region
        if self.access_key_id is not None:
            config["access_key_id"] = self.access_key_id.reveal()
        if self.secret_access_key is not None:
            config["secret_access_key"] = self.secret_access_key.reveal()
        try:
            return obstore.store.S3Store(
                self.bucket,
                prefix=self.prefix or None,
                config=config,
                # Never the allow_http= keyword: a store made so panics when pickled.
                client_options={"allow_http": True} if self.allow_http else None,
                retry_config={
                    # Bounded by time, not count: obstore's jittered backoff spends its default
                    # 10 retries within about 2 s, less than a server takes to restart.
                    "max_retries": 1000,
                    "retry_timeout": datetime.timedelta(seconds=self.retry_timeout),
                    "backoff": {"init_backoff": _FIRST_BACKOFF, "max_backoff": _MAX_BACKOFF, "base": 2},
                },
            )
        except Exception as error:
            reason = self._scrub(str(error))
            raise ValueError(
                f"{self.backend} backend: cannot make a client for bucket {self.bucket!r}: {reason}"
            ) from None

    def request(self, action: str, path: PathLike, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the obstore ``function(store, *args, **kwargs)``, raising builtin errors that name ``path``."""
        store, _ = self.connection()
        try:
            return function(store, *args, **kwargs)
        except Exception as error:
            raise self.failure(error, action, path) from None

    def put(self, key: str, body: Any, path: PathLike, overwrite: bool) -> None:
        """One whole-object PUT; without ``overwrite`` a conditional one (``If-None-Match: *``)."""
        obstore = import_obstore()
        store, _ = self.connection()
        mode = "overwrite" if overwrite else "create"
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                obstore.put(store, key, body, mode=mode, use_multipart=False)
                return
            except Exception as error:
                # 409 ConditionalRequestConflict: another create of this key was in flight; ask again.
                if not _CONFLICT.search(str(error)) or attempt == _CONFLICT_ATTEMPTS - 1:
                    raise self.failure(error, "write", path) from None
            pause = _CONFLICT_PAUSE * 2**attempt * (0.5 + random.random())
            logger.debug(
                "%s backend: conditional-request conflict on %r; asking again in %.2f s", self.backend, str(path), pause
            )
            time.sleep(pause)

    def gather(
        self, function: Callable[[T], Any], items: Sequence[T], meanwhile: Callable[[], object] | None = None
    ) -> list[Any]:
        """``[function(item) for item in items]``, run concurrently; every call ends before any error is raised.

        ``meanwhile()``, if given, runs in this thread while they do. The
        calls must not themselves gather (they would wait on the same pool).
        """
        if meanwhile is None and len(items) < 2:
            return [function(item) for item in items]
        _, pool = self.connection()
        futures = [pool.submit(function, item) for item in items]
        try:
            if meanwhile is not None:
                meanwhile()
        finally:
            wait(futures)
        return [future.result() for future in futures]

    def failure(self, error: Exception, action: str, path: PathLike) -> OSError:
        """The builtin error for an obstore ``error``, credentials scrubbed."""
        exceptions = import_obstore().exceptions
        text = str(error)
        reason = self._scrub(_reason(text))
        logger.debug("%s backend: %s %r failed: %s", self.backend, action, str(path), self._scrub(text))
        if "<Code>NoSuchBucket</Code>" in text:
            return NoSuchBucketError(
                errno.ENOENT,
                f"{self.backend} backend: the bucket {self.bucket!r} does not exist; create it first",
                str(path),
            )
        if isinstance(error, FileNotFoundError):
            return missing(path, self.backend)
        if isinstance(error, (exceptions.AlreadyExistsError, exceptions.PreconditionError)):
            return taken(path, self.backend)
        refused = isinstance(error, (exceptions.PermissionDeniedError, exceptions.UnauthenticatedError))
        if refused or _REFUSED.search(reason):
            return PermissionError(
                errno.EACCES,
                f"{self.backend} backend: the server refused to {action} in bucket {self.bucket!r} ({reason}); "
                "check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) and the bucket's permissions",
                str(path),
            )
        if "HTTP error" in reason:
            endpoint = without_userinfo(self.endpoint or "AWS")
            return ConnectionError(
                errno.ECONNREFUSED,
                f"{self.backend} backend: could not {action}: {endpoint} did not answer within "
                f"{self.retry_timeout:g} s of retries ({reason}); check that the server runs and that "
                "endpoint= is right",
                str(path),
            )
        return OSError(errno.EIO, f"{self.backend} backend: could not {action} ({reason})", str(path))

    def _scrub(self, text: str) -> str:
        given = [secret.reveal() for secret in (self.access_key_id, self.secret_access_key) if secret]
        return scrub(text, [*given, *(os.environ.get(name) for name in _CREDENTIAL_VARIABLES)])


def _reason(text: str) -> str:
    """The gist of an obstore error message: its first line, with the S3 error code and message of its body."""
    first = text.split("\n", 1)[0].removesuffix('<?xml version="1.0" encoding="UTF-8"?>').rstrip(": ")
    body = [found.group(1) for found in (_ERROR_CODE.search(text), _ERROR_MESSAGE.search(text)) if found]
    return ": ".join([first[:400], *body])
