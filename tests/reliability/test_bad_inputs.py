"""What a careless or hostile user tries, generated: every bad input gets a clear error, nothing stored changes.

Through ``FileManager`` on memory, disk and zarr, by class of issue 10:
degenerate layouts (6), unknown options and names too long (8), batches
with one bad item and regions out of bounds (9), aliasing of the caller's
buffer (10). Each bad input must raise the expected builtin type, naming
the user's path where there is one, and leave every stored object as it was
and no temporary file behind. The counts go to the reliability ledger.
"""

from __future__ import annotations

import itertools
import os
import string
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polystore import BackendRegistry, FileManager, InvalidPathError, UnsupportedFormatError
from polystore.backends.disk import TEMP_PREFIX
from tests._reliability_ledger import record, scaled

EXAMPLES = scaled(60, 600)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
SUFFIX = {"memory": ".npy", "disk": ".npy", "zarr": ".zarr"}
names = itertools.count()


class Ledger:
    """Counts of one area, recorded when the test ends."""

    def __init__(self, area: str) -> None:
        self.area, self.operations, self.bad_inputs, self.lost = area, 0, 0, 0

    def record(self) -> None:
        record(self.area, operations=self.operations, bad_inputs=self.bad_inputs, lost_or_torn=self.lost)


def manager(root: Path) -> FileManager:
    """disk and zarr each in a directory of ``root`` of their own (disk would list zarr's chunk files)."""
    for name in ("disk", "zarr"):
        (root / name).mkdir()
    return FileManager(BackendRegistry({"disk": {"root": str(root / "disk")}, "zarr": {"root": str(root / "zarr")}}))


def snapshot(fm: FileManager, backend: str) -> dict[str, tuple[str, bytes]]:
    """Every stored object's dtype and bytes, by path (the seeded stores hold arrays only)."""
    state = {}
    for path in fm.list_files(".", backend, recursive=True):
        loaded = fm.load(path, backend)
        state[path] = (str(loaded.dtype), np.ascontiguousarray(loaded).tobytes())
    return state


def no_temporary_files(root: Path) -> bool:
    return not any(name.startswith(TEMP_PREFIX) for _, dirs, files in os.walk(root) for name in dirs + files)


@pytest.fixture
def seeded(tmp_path: Path) -> FileManager:
    """Three arrays on each backend."""
    fm = manager(tmp_path)
    for backend, suffix in SUFFIX.items():
        for index in range(3):
            fm.save(np.full((4, 5), index, "int32"), f"kept/a{index}{suffix}", backend)
    return fm


def refused(
    ledger: Ledger,
    fm: FileManager,
    backend: str,
    root: Path,
    call: Any,
    error: type[Exception] | tuple[type[Exception], ...],
    path: str | None,
) -> None:
    """Run ``call``, which must raise ``error`` naming ``path``, and change nothing."""
    before = snapshot(fm, backend)
    ledger.bad_inputs += 1
    with pytest.raises(error) as raised:
        call()
    if path is not None:
        assert path[:60] in str(raised.value), f"the error does not name {path!r}: {raised.value}"
    assert TEMP_PREFIX not in str(raised.value)
    if snapshot(fm, backend) != before or not no_temporary_files(root):
        ledger.lost += 1
        raise AssertionError(f"a refused call changed what {backend} holds: {raised.value}")


# -- class 6: degenerate layouts -----------------------------------------------------------
@pytest.mark.parametrize("operation", ["save", "create_array"])
def test_bad_chunks_and_shards_are_refused_before_anything_is_created(
    seeded: FileManager, tmp_path: Path, operation: str
) -> None:
    ledger = Ledger(f"bad inputs: class 6 layouts, zarr {operation}")
    side = st.one_of(st.integers(-3, 0), st.just(2), st.floats(0.5, 3.5), st.booleans(), st.text(max_size=2))

    @SETTINGS
    @given(chunks=st.one_of(st.none(), st.lists(side, max_size=3).map(tuple), st.integers(-2, 0)),
           shards=st.one_of(st.none(), st.lists(side, max_size=3).map(tuple), st.just((3, 3))))
    def check(chunks: Any, shards: Any) -> None:
        valid = [value is None or (isinstance(value, tuple) and len(value) == 2 and all(
            type(item) is int and item > 0 for item in value)) for value in (chunks, shards)]
        if all(valid) and (shards is None or chunks is None or all(
                shard % chunk == 0 for shard, chunk in zip(shards, chunks, strict=True))):
            return
        path = f"layouts/a{next(names)}.zarr"
        data = np.zeros((4, 6), "int16")
        if operation == "save":
            def call() -> None:
                seeded.save(data, path, "zarr", chunks=chunks, shards=shards)
        else:
            def call() -> None:
                seeded.get_backend("zarr").create_array(path, (4, 6), "int16", chunks, shards=shards)  # type: ignore[attr-defined]
        refused(ledger, seeded, "zarr", tmp_path, call, (ValueError, TypeError), path)
        ledger.operations += 1
        assert not seeded.exists(path, "zarr")

    check()
    ledger.record()


# -- class 8: unknown options, names too long ------------------------------------------------
IDENTIFIERS = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)


@pytest.mark.parametrize("backend", sorted(SUFFIX))
def test_an_unknown_option_is_a_type_error_naming_the_path(seeded: FileManager, tmp_path: Path, backend: str) -> None:
    ledger = Ledger(f"bad inputs: class 8 unknown options, {backend}")
    known = {"copy", "chunks", "shards", "compressor", "attributes", "region", "overwrite"}
    # save's and load's own parameters: passed again by keyword, Python's TypeError names the argument, not a path.
    known |= {"self", "data", "path", "backend"}

    @SETTINGS
    @given(option=IDENTIFIERS.filter(lambda name: name not in known), load=st.booleans())
    def check(option: str, load: bool) -> None:
        path = f"kept/a0{SUFFIX[backend]}" if load else f"new/b{next(names)}{SUFFIX[backend]}"
        if load:
            def call() -> None:
                seeded.load(path, backend, **{option: 1})
        else:
            def call() -> None:
                seeded.save(np.ones(3), path, backend, **{option: 1})
        refused(ledger, seeded, backend, tmp_path, call, TypeError, path)
        ledger.operations += 1

    check()
    ledger.record()


@pytest.mark.parametrize("backend", ["disk", "zarr"])
def test_a_name_over_255_bytes_is_refused_naming_the_users_path(
    seeded: FileManager, tmp_path: Path, backend: str
) -> None:
    ledger = Ledger(f"bad inputs: class 8 long names, {backend}")
    characters = st.sampled_from(["a", "\u00e9", "\u20ac", "\U0001f600"])

    @SETTINGS
    @given(name=st.lists(characters, min_size=64, max_size=300).map("".join), depth=st.integers(0, 2))
    def check(name: str, depth: int) -> None:
        path = "/".join(["d"] * depth + [name + SUFFIX[backend]])
        if len(os.fsencode(name + SUFFIX[backend])) <= 255:
            seeded.save(np.ones(2), path, backend)  # fits: saved and loaded back, whatever its characters
            assert seeded.load(path, backend).tolist() == [1.0, 1.0]
            seeded.delete(path, backend)
        else:
            refused(ledger, seeded, backend, tmp_path, lambda: seeded.save(np.ones(2), path, backend),
                    InvalidPathError, path)
        ledger.operations += 1

    check()
    ledger.record()


# -- class 9: one semantics for batches, special paths and region bounds ---------------------
BAD_ITEMS: list[tuple[str, Any, Any, type[Exception]]] = [
    ("unstorable", object(), None, UnsupportedFormatError),
    ("path type", np.ones(2), 7, TypeError),
    ("empty path", np.ones(2), "", InvalidPathError),
    ("taken", np.ones(2), "kept/a1", FileExistsError),
    ("root", np.ones(2), ".", IsADirectoryError),
    ("escape", np.ones(2), "../outside", InvalidPathError),
]


@pytest.mark.parametrize("backend", sorted(SUFFIX))
def test_a_batch_with_one_bad_item_writes_nothing(seeded: FileManager, tmp_path: Path, backend: str) -> None:
    ledger = Ledger(f"bad inputs: class 9 batches, {backend}")
    suffix = SUFFIX[backend]

    @SETTINGS
    @given(size=st.integers(1, 6), data=st.data(), case=st.sampled_from(BAD_ITEMS))
    def check(size: int, data: st.DataObject, case: tuple[str, Any, Any, type[Exception]]) -> None:
        _, bad_data, bad_path, error = case
        batch = f"batch{next(names)}"
        paths: list[Any] = [f"{batch}/i{index}{suffix}" for index in range(size)]
        items: list[Any] = [np.full(3, index) for index in range(size)]
        position = data.draw(st.integers(0, size - 1))
        items[position] = bad_data
        if bad_path is not None:
            paths[position] = bad_path + suffix if bad_path in ("kept/a1", "../outside") else bad_path
        refused(ledger, seeded, backend, tmp_path, lambda: seeded.save_batch(items, paths, backend), error, None)
        ledger.operations += 1
        assert not seeded.exists(batch, backend)

    check()
    ledger.record()


def test_an_out_of_bounds_region_load_is_refused_and_an_inside_one_is_what_numpy_gives(
    seeded: FileManager, tmp_path: Path
) -> None:
    ledger = Ledger("bad inputs: class 9 region bounds, zarr")
    data = np.arange(4 * 5, dtype="int32").reshape(4, 5)
    seeded.save(data, "grid.zarr", "zarr", chunks=(2, 2))
    bound = st.one_of(st.none(), st.integers(-8, 8))
    item = st.one_of(st.integers(-6, 6), st.builds(slice, bound, bound))

    @SETTINGS
    @given(region=st.lists(item, min_size=1, max_size=3).map(tuple))
    def check(region: tuple[Any, ...]) -> None:
        ledger.operations += 1
        inside = len(region) <= 2 and all(
            (-size <= it < size) if isinstance(it, int) else all(
                b is None or -size <= b <= size for b in (it.start, it.stop))
            for it, size in zip(region, data.shape, strict=False)
        )
        if inside:
            np.testing.assert_array_equal(seeded.load("grid.zarr", "zarr", region=region), data[region])
        else:
            refused(ledger, seeded, "zarr", tmp_path, lambda: seeded.load("grid.zarr", "zarr", region=region),
                    ValueError, "grid.zarr")

    check()
    ledger.record()


# -- class 10: aliasing and silent defaults -----------------------------------------------------
def test_memory_copies_and_moves_never_share_the_callers_buffer_with_a_copy() -> None:
    ledger = Ledger("bad inputs: class 10 aliasing, memory")

    @SETTINGS
    @given(steps=st.lists(st.sampled_from(["copy", "move", "copy-of-copy"]), min_size=1, max_size=5))
    def check(steps: list[str]) -> None:
        fm = FileManager()
        caller = np.zeros(4)
        fm.save(caller, "p", "memory", copy=False)
        borrowed, copies = "p", []
        for index, step in enumerate(steps):
            target = f"q{index}"
            if step == "move":
                fm.move(borrowed, target, "memory")
                borrowed = target
            else:
                fm.copy(copies[-1] if step == "copy-of-copy" and copies else borrowed, target, "memory")
                copies.append(target)
        caller[0] = 42  # the caller changes its buffer, as copy=False allows
        ledger.bad_inputs += 1
        ledger.operations += len(steps)
        assert fm.load(borrowed, "memory")[0] == 42
        changed = [path for path in copies if fm.load(path, "memory")[0] != 0]
        ledger.lost += len(changed)
        assert not changed, f"copies {changed} share the caller's buffer"

    check()
    for registry in (None, "disk", ["disk"], BackendRegistry):
        ledger.bad_inputs += 1
        with pytest.raises(TypeError, match="FileManager"):
            FileManager(registry)  # type: ignore[arg-type]
    ledger.record()
