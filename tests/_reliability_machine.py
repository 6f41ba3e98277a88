"""The Hypothesis state machine of the model-based tests.

:class:`StorageMachine` drives random sequences of save (with and without
overwrite), load, exists/is_file/is_dir, delete (with and without
recursive), copy, move, ensure_directory, list_files, list_dir, stat and bad
inputs against one store (a backend, or a Dask manager through
:class:`ManagerAdapter`) and against :class:`ModelFilesystem`, and checks
after every step that the two agree: same results, same exception types,
same tree, same data. What it tried is counted into the reliability ledger.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from polystore.errors import InvalidPathError, UnsupportedFormatError
from tests._reliability_ledger import record
from tests._reliability_model import Expected, ModelFilesystem, make_data, same_data

__all__ = ["MachineConfig", "StorageMachine"]

#: The root directory as every store spells it (relative paths only).
ROOT = "."

#: Spellings of one path that every store treats alike.
_SPELLINGS: tuple[Callable[[str], str], ...] = (
    lambda path: path,
    lambda path: "./" + path,
    lambda path: path.replace("/", "//"),
    lambda path: path + "/",
)

#: Paths every store refuses, with the error (or a base of it) they must raise.
BAD_PATHS: tuple[tuple[Any, type[BaseException]], ...] = (
    ("", InvalidPathError),
    ("a\x00b", InvalidPathError),
    ("../escape", InvalidPathError),
    ("a/../../escape", InvalidPathError),
    (42, TypeError),
    (None, TypeError),
)

#: Paths that rooted filesystem stores (disk, zarr) also refuse.
ROOTED_BAD_PATHS: tuple[tuple[Any, type[BaseException]], ...] = (
    ("/outside/the/root", InvalidPathError),
    (".polystore-tmp-reserved", InvalidPathError),
)


@dataclass
class MachineConfig:
    """What differs between the stores a :class:`StorageMachine` drives.

    Attributes
    ----------
    area
        The report row the counts go to.
    open_store
        Return a fresh, empty store; called once per example.
    close_store
        Release it (remove its files) at the end of the example.
    components
        The path components paths are made of (depth 1 to 3).
    kind_of
        The kind of data saved at a name (by its suffix).
    bad_paths
        Paths the store must refuse, with their error types.
    leading_slash
        Whether ``/a/b`` means ``a/b`` (key-style stores).
    check_data_every_step
        Load every file after every step (else only on load and at the end).
    """

    area: str
    open_store: Callable[[], Any]
    close_store: Callable[[Any], None]
    components: Sequence[str]
    kind_of: Callable[[str], str]
    bad_paths: Sequence[tuple[Any, type[BaseException]]] = BAD_PATHS
    leading_slash: bool = False
    check_data_every_step: bool = True
    universe: list[str] = field(init=False)

    def __post_init__(self) -> None:
        level = list(self.components)
        self.universe = list(level)
        for _ in range(2):
            level = [posixpath.join(parent, name) for parent in level for name in self.components]
            self.universe.extend(level)


class StorageMachine(RuleBasedStateMachine):
    """One store against the model; build with ``StorageMachine.bound(config)``."""

    config: MachineConfig

    @classmethod
    def bound(cls, config: MachineConfig) -> type[StorageMachine]:
        """A subclass driving the store ``config`` describes."""
        return type(f"{cls.__name__}_{config.area}", (cls,), {"config": config})

    def __init__(self) -> None:
        super().__init__()
        self.model = ModelFilesystem()
        self.store = self.config.open_store()
        self.next_token = 1
        self.operations = 0
        self.bad_inputs = 0
        self.lost_or_torn = 0

    def teardown(self) -> None:
        try:
            if self.lost_or_torn == 0:
                self.check_every_file()
        finally:
            record(
                self.config.area, operations=self.operations, bad_inputs=self.bad_inputs, lost_or_torn=self.lost_or_torn
            )
            self.config.close_store(self.store)

    # -- drawing paths ---------------------------------------------------
    def draw_path(self, data: st.DataObject, *, label: str = "path") -> str:
        """A path spelled some way: often an existing file or directory, else any path."""
        pools = [self.config.universe]
        if self.model.files:
            pools.append(sorted(self.model.files))
        directories = sorted(self.model.dirs - {""})
        if directories:
            pools.append(directories)
        key = data.draw(
            st.sampled_from(pools[data.draw(st.integers(0, len(pools) - 1), label=f"{label} pool")]), label=label
        )
        return self.spell(data, key, label)

    def draw_directory(self, data: st.DataObject, *, label: str = "directory") -> str:
        """A directory path: the root, an existing directory, or any path."""
        if data.draw(st.integers(0, 3), label=f"{label} is root") == 0:
            return ROOT
        return self.draw_path(data, label=label)

    def spell(self, data: st.DataObject, key: str, label: str) -> str:
        path = data.draw(st.sampled_from(_SPELLINGS), label=f"{label} spelling")(key)
        if self.config.leading_slash and data.draw(st.booleans(), label=f"{label} leading slash"):
            path = "/" + path
        return path

    def new_data(self, path: str) -> tuple[str, int, Any]:
        kind = self.config.kind_of(posixpath.basename(path.rstrip("/")))
        token = self.next_token
        self.next_token += 1
        return kind, token, make_data(kind, token)

    # -- comparing -------------------------------------------------------
    def compare(
        self,
        operation: str,
        expect: Callable[[], Any],
        act: Callable[[], Any],
        paths: Sequence[str],
        check: Callable[[Any, Any], None] | None = None,
    ) -> None:
        """Run ``operation`` on the model and the store; fail unless they agree, errors included."""
        self.operations += 1
        try:
            expected: Any = expect()
            expected_error: Expected | None = None
        except Expected as error:
            expected, expected_error = None, error
        try:
            actual = act()
        except Exception as error:
            if expected_error is None:
                raise AssertionError(
                    f"{operation}{tuple(paths)}: the model succeeds but the store raised {error!r}"
                ) from error
            if not expected_error.matches(error):
                raise AssertionError(
                    f"{operation}{tuple(paths)}: expected {expected_error}, "
                    f"the store raised {type(error).__name__}: {error}"
                ) from error
            if not any(path in str(error) for path in paths):
                raise AssertionError(
                    f"{operation}{tuple(paths)}: the error does not name the path: {error!r}"
                ) from error
            return
        if expected_error is not None:
            raise AssertionError(f"{operation}{tuple(paths)}: expected {expected_error}, the store returned {actual!r}")
        if check is not None:
            check(expected, actual)
        else:
            assert actual == expected, f"{operation}{tuple(paths)}: store gave {actual!r}, model {expected!r}"

    def check_loaded(self, path: str) -> Callable[[Any, Any], None]:
        def check(expected: tuple[str, int], actual: Any) -> None:
            if not same_data(actual, *expected):
                self.lost_or_torn += 1
                raise AssertionError(
                    f"load({path!r}) returned {actual!r}, not what was saved: {make_data(*expected)!r}"
                )

        return check

    def check_every_file(self) -> None:
        for key, (kind, token) in sorted(self.model.files.items()):
            self.operations += 1
            try:
                loaded = self.store.load(key)
            except FileNotFoundError:
                self.lost_or_torn += 1
                raise AssertionError(f"{key!r} was saved (token {token}) and is lost") from None
            if not same_data(loaded, kind, token):
                self.lost_or_torn += 1
                raise AssertionError(f"{key!r} holds {loaded!r}, not what was saved: {make_data(kind, token)!r}")

    @invariant()
    def tree_agrees_with_model(self) -> None:
        self.operations += 1
        files, expected = self.store.list_files(ROOT, recursive=True), self.model.list_files(ROOT, None, None, True)
        assert files == expected, f"the store's files {files} differ from the model's {expected}"
        for directory in sorted(self.model.dirs):
            self.operations += 1
            spelled = directory or ROOT
            entries, expected = self.store.list_dir(spelled), self.model.list_dir(spelled)
            assert entries == expected, f"list_dir({spelled!r}) gives {entries}, the model {expected}"
        if self.config.check_data_every_step:
            self.check_every_file()

    # -- rules -----------------------------------------------------------
    @rule(data=st.data(), overwrite=st.booleans())
    def save(self, data: st.DataObject, overwrite: bool) -> None:
        path = self.draw_path(data)
        kind, token, value = self.new_data(path)
        self.compare(
            "save",
            lambda: self.model.save(kind, token, path, overwrite),
            lambda: self.store.save(value, path, overwrite=overwrite),
            [path],
        )

    @rule(data=st.data())
    def save_at_root(self, data: st.DataObject) -> None:
        kind, token, value = self.new_data("root.bin")
        overwrite = data.draw(st.booleans(), label="overwrite")
        self.compare(
            "save",
            lambda: self.model.save(kind, token, ROOT, overwrite),
            lambda: self.store.save(value, ROOT, overwrite=overwrite),
            [ROOT],
        )

    @rule(data=st.data())
    def load(self, data: st.DataObject) -> None:
        path = self.draw_path(data)
        self.compare(
            "load", lambda: self.model.load(path), lambda: self.store.load(path), [path], self.check_loaded(path)
        )

    @rule(data=st.data())
    def exists_is_file_is_dir(self, data: st.DataObject) -> None:
        path = self.draw_directory(data)
        self.compare("exists", lambda: self.model.exists(path), lambda: self.store.exists(path), [path])
        self.compare("is_file", lambda: self.model.is_file(path), lambda: self.store.is_file(path), [path])
        self.compare("is_dir", lambda: self.model.is_dir(path), lambda: self.store.is_dir(path), [path])

    @rule(data=st.data())
    def stat(self, data: st.DataObject) -> None:
        path = self.draw_directory(data)
        self.compare(
            "stat", lambda: self.model.stat_type(path), lambda: self.store.stat(path), [path],
            lambda expected, actual: _check_stat(path, expected, actual),
        )

    @rule(data=st.data(), recursive=st.booleans())
    def delete(self, data: st.DataObject, recursive: bool) -> None:
        path = self.draw_directory(data)
        self.compare(
            "delete",
            lambda: self.model.delete(path, recursive),
            lambda: self.store.delete(path, recursive=recursive),
            [path],
        )

    @rule(data=st.data(), overwrite=st.booleans(), keep_source=st.booleans())
    def copy_or_move(self, data: st.DataObject, overwrite: bool, keep_source: bool) -> None:
        src = self.draw_directory(data, label="src")
        dst = self.draw_destination(data, src)
        operation = self.store.copy if keep_source else self.store.move
        self.compare(
            "copy" if keep_source else "move",
            lambda: self.model.transfer(src, dst, overwrite, keep_source),
            lambda: operation(src, dst, overwrite=overwrite),
            [src, dst],
        )

    def draw_destination(self, data: st.DataObject, src: str) -> str:
        """A destination whose name has the kind of ``src``'s (formats follow names on disk)."""
        dst = self.draw_directory(data, label="dst")
        if dst == ROOT or src == ROOT:
            return dst
        source_kind = self.config.kind_of(posixpath.basename(src.rstrip("/")))
        parent, name = posixpath.split(dst.rstrip("/"))
        if self.config.kind_of(name) == source_kind:
            return dst
        same_kind = [component for component in self.config.components if self.config.kind_of(component) == source_kind]
        return posixpath.join(parent, data.draw(st.sampled_from(same_kind), label="dst name"))

    @rule(data=st.data())
    def ensure_directory(self, data: st.DataObject) -> None:
        path = self.draw_directory(data)
        self.compare(
            "ensure_directory",
            lambda: self.model.ensure_directory(path),
            lambda: self.store.ensure_directory(path),
            [path],
        )

    @rule(
        data=st.data(),
        recursive=st.booleans(),
        pattern=st.sampled_from([None, "*", "a*", "*.npy", "*.zarr"]),
        extensions=st.sampled_from([None, {".npy"}, {".bin", ".txt"}, {".zarr"}]),
    )
    def list_files(
        self, data: st.DataObject, recursive: bool, pattern: str | None, extensions: set[str] | None
    ) -> None:
        path = self.draw_directory(data)
        self.compare(
            "list_files",
            lambda: self.model.list_files(path, pattern, extensions, recursive),
            lambda: self.store.list_files(path, pattern=pattern, extensions=extensions, recursive=recursive),
            [path],
        )

    @rule(data=st.data())
    def list_dir(self, data: st.DataObject) -> None:
        path = self.draw_directory(data)
        self.compare("list_dir", lambda: self.model.list_dir(path), lambda: self.store.list_dir(path), [path])

    @rule(data=st.data())
    def bad_path(self, data: st.DataObject) -> None:
        """Every operation refuses a malformed or escaping path, and changes nothing."""
        path, error_type = data.draw(st.sampled_from(list(self.config.bad_paths)), label="bad path")
        good = self.config.components[0]
        value = make_data("array", 0)
        calls: dict[str, Callable[[], Any]] = {
            "save": lambda: self.store.save(value, path),
            "load": lambda: self.store.load(path),
            "exists": lambda: self.store.exists(path),
            "delete": lambda: self.store.delete(path, recursive=True),
            "ensure_directory": lambda: self.store.ensure_directory(path),
            "list_files": lambda: self.store.list_files(path),
            "list_dir": lambda: self.store.list_dir(path),
            "stat": lambda: self.store.stat(path),
            "copy to": lambda: self.store.copy(good, path),
            "move from": lambda: self.store.move(path, good),
        }
        operation = data.draw(st.sampled_from(sorted(calls)), label="operation")
        self.bad_inputs += 1
        try:
            result = calls[operation]()
        except error_type:
            return
        except Exception as error:
            raise AssertionError(
                f"{operation}({path!r}) raised {type(error).__name__}: {error}; expected {error_type.__name__}"
            ) from error
        raise AssertionError(f"{operation}({path!r}) returned {result!r}; expected {error_type.__name__}")

    @rule(data=st.data())
    def unstorable_data(self, data: st.DataObject) -> None:
        """Objects no backend stores are refused before anything is written."""
        path = self.draw_path(data)
        name = posixpath.basename(path.rstrip("/"))
        if name == "" or self.config.kind_of(name) != "array":
            path = posixpath.join(posixpath.dirname(path.rstrip("/")), next(
                component for component in self.config.components if self.config.kind_of(component) == "array"
            ))
        value = data.draw(st.sampled_from([np.array([object(), 1], dtype=object), {1, 2, 3}]), label="unstorable")
        self.bad_inputs += 1
        try:
            self.store.save(value, path, overwrite=True)
        except UnsupportedFormatError:
            return
        except Exception as error:
            raise AssertionError(
                f"save({type(value).__name__}, {path!r}) raised {error!r}; expected UnsupportedFormatError"
            ) from error
        raise AssertionError(f"save({type(value).__name__}, {path!r}) stored it; expected UnsupportedFormatError")

    @precondition(lambda self: bool(self.model.files))
    @rule(data=st.data())
    def load_every_spelling(self, data: st.DataObject) -> None:
        """An existing file loads the same through every spelling of its path."""
        key = data.draw(st.sampled_from(sorted(self.model.files)), label="file")
        for spelling in _SPELLINGS:
            path = spelling(key)
            self.compare(
                "load",
                lambda path=path: self.model.load(path),
                lambda path=path: self.store.load(path),
                [path],
                self.check_loaded(path),
            )


def _check_stat(path: str, expected_type: str, actual: dict[str, Any]) -> None:
    assert actual["type"] == expected_type, f"stat({path!r}) type {actual['type']!r}, model {expected_type!r}"
    assert isinstance(actual["size"], int) and actual["size"] >= 0, f"stat({path!r}) size {actual['size']!r}"
    if expected_type == "directory":
        assert actual["size"] == 0, f"stat({path!r}) of a directory has size {actual['size']}"
