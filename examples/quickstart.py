"""Quick start: one storage API over memory, disk and zarr, in one process.

Run it with ``python examples/quickstart.py`` (or ``make quickstart``); it
writes only into a temporary directory, which it removes at the end.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from polystore import BackendRegistry, FileManager


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="polystore-quickstart-") as scratch:
        root = Path(scratch)
        # Every backend confined to the scratch directory: paths are relative to it.
        registry = BackendRegistry({"disk": {"root": root}, "zarr": {"root": root}})
        fm = FileManager(registry)
        image = np.random.default_rng(0).random((512, 512), dtype=np.float32)

        fm.save(image, "raw/image.npy", "disk")
        fm.save({"pixel_size_um": 0.65, "channel": "DAPI"}, "raw/meta.json", "disk")
        fm.save(image, "raw/image.zarr", "zarr", chunks=(128, 128))
        fm.save(image * 2, "scratch/doubled", "memory")

        assert np.array_equal(fm.load("raw/image.npy", "disk"), image)
        corner = fm.load("raw/image.zarr", "zarr", region=(slice(0, 128), slice(0, 128)))
        assert np.array_equal(corner, image[:128, :128])
        assert np.array_equal(fm.load("scratch/doubled", "memory"), image * 2)

        print("backends:", sorted(registry))
        for path in fm.list_files("raw", "disk"):
            print(f"disk  {path:<20} {fm.stat(path, 'disk')['size']:>9} bytes")
        for path in fm.list_files("raw", "zarr"):
            print(f"zarr  {path:<20} {fm.stat(path, 'zarr')['size']:>9} bytes")
        print("memory:", fm.list_files("scratch", "memory"))


if __name__ == "__main__":
    main()
