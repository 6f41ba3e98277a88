"""save_array and load_array on a real LocalCluster: zarr and memory."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from dask.delayed import Delayed
from distributed import get_task_stream, wait
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

from polystore_dask import PolystorePlugin
from tests._cluster import worker_addresses
from tests._recording_backends import region_name, writers_directory

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def polystore_plugin() -> PolystorePlugin:
    # The recording zarr backend notes which worker wrote each region.
    return PolystorePlugin(imports=["tests._recording_backends"])


def sample(shape=(600, 500), chunks=(200, 250), dtype=np.float32) -> da.Array:
    """A deterministic array computed on the workers."""
    return da.random.default_rng(11).random(shape, chunks=chunks).astype(dtype)


def assert_every_element_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    assert np.array_equal(actual, expected)


# -- zarr ---------------------------------------------------------------------
def test_save_array_writes_every_element_with_the_arrays_own_chunks(dfm, tmp_path):
    x = sample()
    assert dfm.save_array(x, str(tmp_path / "a.zarr")) is None
    stored = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
    assert stored.chunks == (200, 250)
    assert_every_element_equal(stored[...], x.compute())


@pytest.mark.parametrize(
    ("dask_chunks", "chunks", "shards"),
    [
        ((300, 300), (256, 256), None),  # blocks straddle zarr chunks
        (((100, 300, 200), (250, 250)), None, None),  # irregular blocks: backend default chunks
        ((128, 125), (128, 125), (256, 250)),  # blocks smaller than shards (dask#12583 loses data here)
        ((200, 250), (100, 125), (300, 500)),  # blocks straddle shards
    ],
)
def test_save_array_is_exact_when_blocks_do_not_match_chunks_or_shards(dfm, tmp_path, dask_chunks, chunks, shards):
    x = sample(chunks=dask_chunks)
    dfm.save_array(x, str(tmp_path / "b.zarr"), chunks=chunks, shards=shards)
    stored = zarr.open_array(str(tmp_path / "b.zarr"), mode="r")
    if chunks is not None:
        assert stored.chunks == chunks
    assert stored.shards == shards
    assert_every_element_equal(stored[...], x.compute())


#: Each compressor save_array offers (and leaving it out), with the zarr codecs it must store.
COMPRESSORS = {
    "default": ({}, [ZstdCodec]),
    "zstd": ({"compressor": "zstd"}, [ZstdCodec]),
    "blosc-lz4": ({"compressor": "blosc-lz4"}, [BloscCodec]),
    "gzip": ({"compressor": "gzip"}, [GzipCodec]),
    "none": ({"compressor": None}, []),
}


@pytest.mark.parametrize("offered", sorted(COMPRESSORS))
def test_save_array_takes_compressor_and_numpy_input(dfm, tmp_path, offered):
    keywords, codecs = COMPRESSORS[offered]
    data = np.arange(5000, dtype=np.int64).reshape(50, 100)
    path = tmp_path / "c.zarr"
    dfm.save_array(data, str(path), chunks=(10, 100), **keywords)
    stored = zarr.open_array(str(path), mode="r")
    assert_every_element_equal(stored[...], data)
    assert [type(codec) for codec in stored.compressors] == codecs
    if offered == "blosc-lz4":
        assert stored.compressors[0].cname.value == "lz4"
    # The chunk files are what the codecs made of them: raw bytes without one, fewer with one.
    sizes = [chunk.stat().st_size for chunk in (path / "c").rglob("*") if chunk.is_file()]
    assert len(sizes) == 5
    raw = 10 * 100 * data.itemsize
    assert all(size == raw for size in sizes) if not codecs else all(size < raw for size in sizes)


def test_save_array_without_compute_returns_a_delayed_that_writes(dfm, tmp_path):
    x = sample()
    path = str(tmp_path / "d.zarr")
    delayed = dfm.save_array(x, path, compute=False)
    assert isinstance(delayed, Delayed)
    assert not zarr.open_array(path, mode="r")[...].any()  # created, not yet written
    dask.compute(delayed)
    assert_every_element_equal(zarr.open_array(path, mode="r")[...], x.compute())


def test_save_array_refuses_an_existing_array_unless_overwrite(dfm, tmp_path):
    path = str(tmp_path / "e.zarr")
    dfm.save_array(sample(), path)
    with pytest.raises(FileExistsError):
        dfm.save_array(sample(), path)
    y = sample(shape=(40, 30), chunks=(20, 30))
    dfm.save_array(y, path, overwrite=True)
    assert_every_element_equal(zarr.open_array(path, mode="r")[...], y.compute())


def test_save_array_writes_each_block_on_the_worker_that_holds_it(client, dfm, tmp_path):
    # Rows of blocks computed on alternate workers, so both workers hold blocks.
    addresses = worker_addresses(client)
    x = sample()
    rows = [
        client.persist(x.blocks[row], workers=[addresses[row % 2]], allow_other_workers=False)
        for row in range(x.numblocks[0])
    ]
    held = client.persist(da.concatenate(rows, axis=0))
    wait(held)
    holders = {key: set(where) for key, where in client.who_has(held).items()}
    assert set().union(*holders.values()) == set(addresses)
    path = str(tmp_path / "f.zarr")
    with get_task_stream(client) as stream:
        dfm.save_array(held, path, "test_recording_zarr")
    writes = [entry for entry in stream.data if str(entry["key"]).startswith("('polystore-save_array-write-")]
    assert len(writes) == 3 * 2
    assert {entry["worker"] for entry in writes} <= set(addresses)
    starts = [np.cumsum((0, *sizes)) for sizes in held.chunks]
    expected = {}
    for index in np.ndindex(*held.numblocks):
        region = tuple(slice(int(starts[axis][i]), int(starts[axis][i + 1])) for axis, i in enumerate(index))
        expected[region_name(region)] = holders[(held.name, *index)]
    recorded = {record.name: record.read_text().split() for record in writers_directory(path).iterdir()}
    assert sorted(recorded) == sorted(expected)  # every block written, into its own region
    for region, writers in recorded.items():
        assert len(writers) == 1, f"region {region} written {len(writers)} times"
        assert writers[0] in expected[region], f"region {region} written on {writers[0]}, held on {expected[region]}"
    assert_every_element_equal(zarr.open_array(path, mode="r")[...], x.compute())


def test_load_array_is_lazy_and_sums_like_numpy(client, dfm, tmp_path):
    x = sample()
    path = str(tmp_path / "g.zarr")
    dfm.save_array(x, path)
    with get_task_stream(client) as stream:
        lazy = dfm.load_array(path)
    assert isinstance(lazy, da.Array)
    assert lazy.name.startswith("polystore-load_array-")
    assert not [entry for entry in stream.data if str(entry["key"]).startswith("('polystore-load_array-")]
    assert lazy.chunks == ((200, 200, 200), (250, 250))
    expected = x.compute()
    assert float(lazy.sum().compute()) == pytest.approx(float(expected.sum(dtype=np.float64)), rel=1e-5)
    assert_every_element_equal(lazy.compute(), expected)


def test_load_array_takes_other_chunks(dfm, tmp_path):
    x = sample()
    dfm.save_array(x, str(tmp_path / "h.zarr"))
    lazy = dfm.load_array(str(tmp_path / "h.zarr"), chunks=(150, 500))
    assert lazy.chunks == ((150, 150, 150, 150), (500,))
    assert_every_element_equal(lazy.compute(), x.compute())


@pytest.mark.parametrize("backend", ["zarr", "memory"])
@pytest.mark.parametrize(
    ("chunks", "why"),
    [((150,), "same length"), ((0, 100), "block size of 0"), ((150, 40, 2), "same length"),
     (((300, 200), (500,)), "add up"), ("huge", "byte unit"), ((1.5, 100), "integers")],
)
def test_load_array_with_chunks_that_do_not_fit_names_the_array_and_what_to_give(dfm, tmp_path, backend, chunks, why):
    x = sample()
    path = str(tmp_path / "fit.zarr") if backend == "zarr" else f"{tmp_path.name}/fit"
    dfm.save_array(x, path, backend)
    with pytest.raises(ValueError, match=r"load_array of .*fit.*chunks=.*shape \(600, 500\)") as caught:
        dfm.load_array(path, backend, chunks=chunks)
    assert why in str(caught.value) and "such as (200, 250)" in str(caught.value)
    # Nothing stored was touched, and chunks dask takes in any of its forms still work.
    assert dfm.load_array(path, backend, chunks={0: 300}).chunks == ((300, 300), (500,))
    assert_every_element_equal(dfm.load_array(path, backend, chunks=(-1, 100)).compute(), x.compute())


def test_load_array_reads_what_dask_wrote_and_dask_reads_ours(dfm, tmp_path):
    x = sample()
    da.to_zarr(x, str(tmp_path / "theirs.zarr"))
    assert_every_element_equal(dfm.load_array(str(tmp_path / "theirs.zarr")).compute(), x.compute())
    dfm.save_array(x, str(tmp_path / "ours.zarr"))
    assert_every_element_equal(da.from_zarr(str(tmp_path / "ours.zarr")).compute(), x.compute())


def test_load_array_of_a_missing_path_raises_file_not_found(dfm, tmp_path):
    with pytest.raises(FileNotFoundError):
        dfm.load_array(str(tmp_path / "missing.zarr"))


def test_relative_zarr_paths_are_taken_from_the_client_directory(dfm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = sample()
    dfm.save_array(x, "rel/r.zarr")
    assert (tmp_path / "rel" / "r.zarr" / "zarr.json").is_file()
    assert_every_element_equal(dfm.load_array("rel/r.zarr").compute(), x.compute())


def test_save_array_to_a_backend_without_create_array_is_refused(dfm, tmp_path):
    with pytest.raises(ValueError, match="create_array"):
        dfm.save_array(sample(), str(tmp_path / "a.npy"), "disk")


# -- memory -------------------------------------------------------------------
def memory_blocks(client, key: str) -> dict[str, list[str]]:
    def blocks(dask_worker):
        backend = dask_worker.plugins["polystore"].registry["memory"]
        return [name for name in backend.list_dir(key) if name != ".array"] if backend.is_dir(key) else []

    return client.run(blocks)


def test_memory_save_array_keeps_each_block_on_a_worker_and_loads_it_back(client, dfm, tmp_path):
    x = sample()
    key = f"{tmp_path.name}/m"
    assert dfm.save_array(x, key, "memory") is None
    held = memory_blocks(client, key)
    assert sorted(sum(held.values(), [])) == sorted(f"{i}.{j}" for i in range(3) for j in range(2))
    lazy = dfm.load_array(key, "memory")
    assert isinstance(lazy, da.Array)
    assert lazy.chunks == x.chunks
    assert_every_element_equal(lazy.compute(), x.compute())
    assert float(lazy.sum().compute()) == pytest.approx(float(x.compute().sum(dtype=np.float64)), rel=1e-5)
    assert_every_element_equal(dfm.load_array(key, "memory", chunks=(600, 500)).compute(), x.compute())


def test_memory_save_array_without_compute_and_overwrite(client, dfm, tmp_path):
    key = f"{tmp_path.name}/n"
    delayed = dfm.save_array(sample(), key, "memory", compute=False)
    assert isinstance(delayed, Delayed)
    dask.compute(delayed)
    assert_every_element_equal(dfm.load_array(key, "memory").compute(), sample().compute())
    with pytest.raises(FileExistsError):
        dfm.save_array(sample(), key, "memory")
    y = sample(shape=(30, 20), chunks=(10, 20), dtype=np.int16)
    dfm.save_array(y, key, "memory", overwrite=True)
    assert_every_element_equal(dfm.load_array(key, "memory").compute(), y.compute())
    assert sorted(sum(memory_blocks(client, key).values(), [])) == ["0.0", "1.0", "2.0"]


def test_memory_save_array_keeps_blocks_of_the_chunks_asked_for(client, dfm, tmp_path):
    key = f"{tmp_path.name}/c"
    dfm.save_array(sample(), key, "memory", chunks=(300, 500))
    assert sorted(sum(memory_blocks(client, key).values(), [])) == ["0.0", "1.0"]
    assert dfm.load_array(key, "memory").chunks == ((300, 300), (500,))


def test_memory_load_array_of_a_missing_path_raises_file_not_found(dfm, tmp_path):
    with pytest.raises(FileNotFoundError, match="save_array"):
        dfm.load_array(f"{tmp_path.name}/none", "memory")


def test_load_array_names_a_corrupt_chunk_file(dfm, tmp_path):
    path = tmp_path / "corrupt.zarr"
    dfm.save_array(sample(), str(path))
    (path / "c" / "1" / "0").write_bytes(b"not zstd")
    lazy = dfm.load_array(str(path))
    with pytest.raises(ValueError, match="c/1/0"):
        lazy.compute()
