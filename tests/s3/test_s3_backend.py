"""The s3 backend on a real SeaweedFS: the conformance kit, plus what only object storage involves."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import obstore
import pytest

from polystore import BackendRegistry, FileManager, InvalidPathError, S3Backend
from polystore.backends.s3 import DIRECTORY_MARKER
from polystore.testing import BackendTests, assert_same_data
from tests._seaweed import SeaweedServer

ROOT = Path(__file__).resolve().parents[2]


class TestS3Conformance(BackendTests):
    @pytest.fixture
    def backend(self, s3: S3Backend) -> S3Backend:
        return s3


def raw_keys(seaweed: SeaweedServer, prefix: str) -> list[str]:
    """Every key below ``prefix``, as plain obstore lists them."""
    return sorted(entry["path"] for entry in obstore.list(seaweed.store(prefix=prefix)).collect())


def test_backend_declares_a_shared_locality_and_key_spelling(s3: S3Backend) -> None:
    assert (s3.name, s3.locality, s3.supports_regions) == ("s3", "shared", False)
    assert s3.canonical_path("/a//b.npy") == s3.canonical_path("a/b.npy") == "a/b.npy"


def test_a_save_is_one_object_at_prefix_and_path_that_plain_obstore_and_numpy_read(
    s3: S3Backend, seaweed: SeaweedServer
) -> None:
    data = np.arange(12, dtype=np.float64).reshape(3, 4)
    s3.save(data, "run/a.npy")
    assert raw_keys(seaweed, s3.prefix) == ["run/a.npy"]
    raw = obstore.get(seaweed.store(prefix=s3.prefix), "run/a.npy").bytes()
    assert_same_data(np.load(io.BytesIO(bytes(raw))), data)


def test_loaded_arrays_are_writable_copies(s3: S3Backend) -> None:
    s3.save(np.zeros(4), "a.npy")
    loaded = s3.load("a.npy")
    loaded[0] = 1.0
    assert s3.load("a.npy")[0] == 0.0


def test_fortran_ordered_and_empty_arrays_round_trip(s3: S3Backend) -> None:
    for name, data in {"f.npy": np.asfortranarray(np.arange(6).reshape(2, 3)), "e.npy": np.zeros((0, 3))}.items():
        s3.save(data, name)
        assert_same_data(s3.load(name), data)


def test_every_suffix_format_round_trips(s3: S3Backend) -> None:
    samples: dict[str, Any] = {
        "a.npz": {"x": np.arange(3), "y": np.ones((2, 2))},
        "a.json": {"k": [1, 2]},
        "a.txt": "héllo",
        "a.tif": np.arange(16, dtype=np.uint16).reshape(4, 4),
        "a.bin": b"raw",
    }
    s3.save_batch(list(samples.values()), list(samples))
    for path, expected in samples.items():
        loaded = s3.load(path)
        if isinstance(expected, dict) and path.endswith(".npz"):
            assert sorted(loaded) == sorted(expected)
            for key in expected:
                assert_same_data(loaded[key], expected[key])
        else:
            assert_same_data(loaded, expected)


def test_an_empty_directory_is_one_hidden_marker_object(s3: S3Backend, seaweed: SeaweedServer) -> None:
    s3.ensure_directory("made/empty")
    assert raw_keys(seaweed, s3.prefix) == [f"made/empty/{DIRECTORY_MARKER}"]
    assert s3.list_dir("made") == ["empty"] and s3.list_dir("made/empty") == []
    assert s3.list_files("made", recursive=True) == []


def test_deleting_the_last_entry_keeps_its_directory(s3: S3Backend) -> None:
    s3.save(b"x", "keep/only.bin")
    s3.delete("keep/only.bin")
    assert s3.is_dir("keep") and s3.list_dir("keep") == []
    s3.save(b"y", "keep/inner/deep.bin")
    s3.move("keep/inner/deep.bin", "elsewhere.bin")
    assert s3.is_dir("keep/inner")


def test_the_marker_name_is_refused_as_a_path(s3: S3Backend) -> None:
    with pytest.raises(InvalidPathError, match=DIRECTORY_MARKER):
        s3.save(b"x", f"d/{DIRECTORY_MARKER}")


def test_prefixes_without_objects_are_not_directories(s3: S3Backend, seaweed: SeaweedServer) -> None:
    # SeaweedFS keeps a directory tree, and lists a prefix for a while after its last object went.
    store = seaweed.store(prefix=s3.prefix)
    obstore.put(store, "g/keep.bin", b"k")
    obstore.put(store, "g/sub/gone.bin", b"x")
    obstore.delete(store, "g/sub/gone.bin")
    assert s3.list_dir("g") == ["keep.bin"]
    assert not s3.is_dir("g/sub") and not s3.exists("g/sub")
    with pytest.raises(FileNotFoundError):
        s3.list_files("g/sub")


def test_listings_span_more_than_one_page_of_keys(s3: S3Backend) -> None:
    paths = [f"many/{i:04d}.bin" for i in range(1100)]
    s3.save_batch([b"x"] * len(paths), paths)
    assert s3.list_files("many") == paths
    assert len(s3.load_batch(paths)) == len(paths)
    s3.delete("many", recursive=True)
    assert not s3.exists("many")


def test_a_batch_refuses_a_directory_target_before_writing_anything(s3: S3Backend) -> None:
    s3.ensure_directory("batch/taken.bin")
    paths = ["batch/a.bin", "batch/taken.bin", "batch/c.bin"]
    with pytest.raises(IsADirectoryError, match="taken.bin"):
        s3.save_batch([b"a", b"b", b"c"], paths)
    assert s3.list_files("batch") == []


def test_a_batch_that_names_a_path_twice_with_overwrite_stores_the_last_item(s3: S3Backend) -> None:
    s3.save_batch([b"first", b"other", b"last"], ["twice.bin", "other.bin", "twice.bin"], overwrite=True)
    assert s3.load_batch(["twice.bin", "other.bin"]) == [b"last", b"other"]


def test_stat_gives_size_and_modification_time(s3: S3Backend) -> None:
    s3.save(b"12345", "s.bin")
    info = s3.stat("s.bin")
    assert info["size"] == 5 and info["type"] == "file" and info["mtime"] > 0


def test_copy_and_move_to_the_same_path(s3: S3Backend) -> None:
    s3.save(b"same", "same.bin")
    with pytest.raises(FileExistsError):
        s3.copy("same.bin", "same.bin")
    s3.move("same.bin", "same.bin", overwrite=True)
    assert s3.load("same.bin") == b"same"


def test_the_backend_pickles_without_its_client_and_works_after(s3: S3Backend) -> None:
    s3.save(b"before", "p.bin")
    copy = pickle.loads(pickle.dumps(s3))
    assert copy.load("p.bin") == b"before"
    assert repr(copy) == repr(s3)


def test_its_obstore_store_pickles_with_allow_http(s3: S3Backend) -> None:
    # obstore's allow_http=True keyword panics on pickle; client_options={"allow_http": True} does not.
    s3.save(b"through a pickled store", "pickled.bin")
    store, _ = s3._client.connection()
    assert bytes(obstore.get(pickle.loads(pickle.dumps(store)), "pickled.bin").bytes()) == b"through a pickled store"


def test_one_store_per_backend_is_reused_across_calls_and_threads(s3: S3Backend) -> None:
    s3.save_batch([b"x"] * 40, [f"reuse/{i}.bin" for i in range(40)])
    store, pool = s3._client.connection()
    s3.load_batch([f"reuse/{i}.bin" for i in range(40)])
    assert s3._client.connection() == (store, pool)


def test_credentials_default_to_the_aws_environment(
    seaweed: SeaweedServer, s3_options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_options.pop("access_key_id"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_options.pop("secret_access_key"))
    backend = S3Backend(**s3_options)
    backend.save(b"env", "env.bin")
    assert backend.load("env.bin") == b"env"
    assert "from the environment" in repr(backend)


def test_a_missing_bucket_is_named_in_the_error(seaweed: SeaweedServer) -> None:
    backend = S3Backend(**seaweed.backend_options(bucket="polystore-no-such-bucket"))
    with pytest.raises(FileNotFoundError, match="bucket 'polystore-no-such-bucket' does not exist"):
        backend.save(b"x", "a.bin")
    with pytest.raises(FileNotFoundError, match="polystore-no-such-bucket"):
        backend.load("a.bin")


def test_an_http_endpoint_needs_allow_http() -> None:
    with pytest.raises(ValueError, match="allow_http=True"):
        S3Backend("bucket", endpoint="http://127.0.0.1:9")


def test_through_a_file_manager_and_registry(s3_options: dict[str, Any]) -> None:
    fm = FileManager(BackendRegistry({"s3": s3_options}))
    fm.save(np.arange(5), "fm/a.npy", "s3")
    assert_same_data(fm.load("fm/a.npy", "s3"), np.arange(5))
    assert fm.list_files("fm", "s3") == ["fm/a.npy"]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_obstore_is_imported_on_first_use_only() -> None:
    result = run_python(
        """
        import sys
        from polystore import BackendRegistry
        backend = BackendRegistry({"s3": {"bucket": "b"}})["s3"]
        print("obstore" in sys.modules)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_without_obstore_first_use_raises_import_error_with_the_install_hint() -> None:
    result = run_python(
        """
        import sys
        sys.modules["obstore"] = None  # as if it were not installed
        from polystore import S3Backend
        try:
            S3Backend("b").exists("x")
        except ImportError as error:
            print(error)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'polystore[s3]'" in result.stdout


@pytest.mark.parametrize("piece", [1, 7, 128, 1 << 20])
def test_an_npy_file_arriving_in_pieces_of_any_size_builds_the_same_array(piece: int) -> None:
    from polystore.backends.formats import NpyAssembler

    for data in (np.arange(300, dtype=np.int16).reshape(20, 15), np.asfortranarray(np.ones((3, 5))), np.zeros(0)):
        stream = io.BytesIO()
        np.save(stream, data)
        content = stream.getvalue()
        assembler = NpyAssembler("a.npy", "s3")
        for start in range(0, len(content), piece):
            assembler.feed(content[start : start + piece])
        assert_same_data(assembler.finish(), data)


def test_a_truncated_npy_object_raises_value_error_naming_it(s3: S3Backend, seaweed: SeaweedServer) -> None:
    stream = io.BytesIO()
    np.save(stream, np.arange(100))
    obstore.put(seaweed.store(prefix=s3.prefix), "cut.npy", stream.getvalue()[:-8])
    with pytest.raises(ValueError, match=r"s3 backend: 'cut.npy' is not a readable .npy file: it is truncated"):
        s3.load("cut.npy")


def test_check_save_raises_what_save_would_and_writes_nothing(s3: S3Backend) -> None:
    s3.save(b"x", "taken.bin")
    s3.check_save(b"y", "taken.bin", overwrite=True)
    s3.check_save(b"y", "free.bin")
    with pytest.raises(FileExistsError):
        s3.check_save(b"y", "taken.bin")
    with pytest.raises(NotADirectoryError):
        s3.check_save(b"y", "taken.bin/below.bin")
    with pytest.raises(IsADirectoryError):
        s3.check_save(b"y", "somewhere/..")
    assert s3.list_dir(".") == ["taken.bin"]
