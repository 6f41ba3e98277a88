"""A disk backend whose every save takes a while, so a test can kill a worker in the middle of a batch.

Imported on the workers only (``PolystorePlugin(imports=[...])``), never in
the test process, so the test process's registry stays as the other tests
expect.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from polystore.backend import PathLike, check_batch_lengths
from polystore.backends.disk import DiskBackend

__all__ = ["SAVE_SECONDS", "SlowDiskBackend"]

#: How long each save waits before writing.
SAVE_SECONDS = 0.1


class SlowDiskBackend(DiskBackend):
    """:class:`DiskBackend` that waits :data:`SAVE_SECONDS` before each save, one item at a time."""

    _backend_type = "reliability-slow-disk"

    def save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        # docstring inherited
        time.sleep(SAVE_SECONDS)
        super().save(data, path, overwrite=overwrite, **kwargs)

    def save_batch(
        self, data_list: Sequence[Any], paths: Sequence[PathLike], *, overwrite: bool = False, **kwargs: Any
    ) -> None:
        # docstring inherited
        check_batch_lengths(data_list, paths, self.name)
        for data, path in zip(data_list, paths, strict=True):
            self.save(data, path, overwrite=overwrite, **kwargs)
