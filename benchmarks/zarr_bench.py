"""Row 4: the zarr backend against raw zarr with the same settings.

A 1 GiB float32 array (16384 x 16384) in 1024 x 1024 chunks, once with
zstd and once uncompressed. Ours is ``fm.save`` / ``fm.load``; the baseline
is ``zarr.create_array(...)`` then ``z[:] = data``, and
``zarr.open_array(path)[:]``. The baseline's codecs are read back from an
array ours wrote, so both sides use exactly the same ones. Both loads read
one array written before the reps (from the page cache).

Rows 4e-4h put the codec pipelines side by side: ours with
``ZarrBackend(codec_pipeline="zarrs")``, against ours with
``codec_pipeline="zarr"``, zarr-python's own pipeline, on the same data and
chunks. Rows 4a-4d use the default, ``"auto"``: zarrs in a process like this
one (no ``MALLOC_TRIM_THRESHOLD_``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks._harness import Bench, MiB, Result, compare, throughput_result, timed
from polystore import BackendRegistry, FileManager

__all__ = ["run"]


def _codec_names(array: Any) -> list[str]:
    return [type(codec).__name__ for codec in array.compressors]


def _compare_codec(
    bench: Bench,
    fm: FileManager,
    data: np.ndarray,
    chunks: tuple[int, int],
    compressor: str | None,
    rows: tuple[str, str],
) -> list[Result]:
    import zarr

    options: dict[str, Any] = {"chunks": chunks, "compressor": compressor}
    with bench.scratch() as directory:
        probe = str(directory / "probe.zarr")
        fm.save(data, probe, "zarr", **options)
        written = zarr.open_array(probe, mode="r")
    if written.chunks != chunks or written.shards is not None:
        raise RuntimeError(
            f"zarr backend wrote chunks {written.chunks}, shards {written.shards}; the row asks for {chunks}, no shards"
        )
    compressors = written.compressors
    settings = {"shape": data.shape, "dtype": data.dtype, "chunks": chunks, "compressors": compressors}
    source = str(bench.fresh_dir() / "source.zarr")
    zarr.create_array(source, **settings)[:] = data
    np.testing.assert_array_equal(fm.load(source, "zarr"), data)

    def raw_save(path: str) -> None:
        zarr.create_array(path, **settings)[:] = data

    def ours_save() -> float:
        with bench.scratch() as directory:
            return timed(fm.save, data, str(directory / "a.zarr"), "zarr", **options)

    def zarr_save() -> float:
        with bench.scratch() as directory:
            return timed(raw_save, str(directory / "a.zarr"))

    def ours_load() -> float:
        return timed(fm.load, source, "zarr")

    def zarr_load() -> float:
        return timed(lambda: zarr.open_array(source, mode="r")[:])

    save = compare(ours_save, zarr_save, reps=bench.heavy_reps, warmup=bench.warmup)
    load = compare(ours_load, zarr_load, reps=bench.heavy_reps, warmup=bench.warmup)
    codec = "+".join(_codec_names(written)) or "no compression"
    title = f"{data.nbytes // MiB} MiB float32, chunks {chunks[0]}x{chunks[1]}, {codec}"
    megabytes = data.nbytes / 1e6
    label = f"compressor={compressor!r}"
    return [
        throughput_result(rows[0], f"zarr save, {title}", unit="MB/s", work=megabytes,
                          ours=(f"fm.save(a, p, 'zarr', {label})", save[0]),
                          baseline=("zarr.create_array + z[:] = a", save[1]), min_ratio=0.9),
        throughput_result(rows[1], f"zarr load, {title} (hot cache)", unit="MB/s", work=megabytes,
                          ours=("fm.load(p, 'zarr')", load[0]),
                          baseline=("zarr.open_array(p)[:]", load[1]), min_ratio=0.9),
    ]


def _compare_pipelines(
    bench: Bench, data: np.ndarray, chunks: tuple[int, int], compressor: str | None, rows: tuple[str, str]
) -> list[Result]:
    fast = FileManager(BackendRegistry({"zarr": {"codec_pipeline": "zarrs"}}))
    own = FileManager(BackendRegistry({"zarr": {"codec_pipeline": "zarr"}}))
    options: dict[str, Any] = {"chunks": chunks, "compressor": compressor}
    source = str(bench.fresh_dir() / "source.zarr")
    own.save(data, source, "zarr", **options)
    np.testing.assert_array_equal(fast.load(source, "zarr"), data)

    def saving(fm: FileManager) -> Callable[[], float]:
        def trial() -> float:
            with bench.scratch() as directory:
                return timed(fm.save, data, str(directory / "a.zarr"), "zarr", **options)

        return trial

    def loading(fm: FileManager) -> Callable[[], float]:
        return lambda: timed(fm.load, source, "zarr")

    save = compare(saving(fast), saving(own), reps=bench.heavy_reps, warmup=bench.warmup)
    load = compare(loading(fast), loading(own), reps=bench.heavy_reps, warmup=bench.warmup)
    title = f"{data.nbytes // MiB} MiB float32, chunks {chunks[0]}x{chunks[1]}, compressor={compressor!r}"
    megabytes = data.nbytes / 1e6
    return [
        throughput_result(rows[0], f"zarr save, codec pipelines, {title}", unit="MB/s", work=megabytes,
                          ours=("fm.save, codec_pipeline='zarrs'", save[0]),
                          baseline=("fm.save, codec_pipeline='zarr'", save[1]), min_ratio=1.0),
        throughput_result(rows[1], f"zarr load, codec pipelines, {title} (hot cache)", unit="MB/s",
                          work=megabytes, ours=("fm.load, codec_pipeline='zarrs'", load[0]),
                          baseline=("fm.load, codec_pipeline='zarr'", load[1]), min_ratio=1.0),
    ]


def run(bench: Bench, rows: set[str]) -> list[Result]:
    """Measure zarr save and load, with zstd and with no compression."""
    side = bench.size(16384, 512)
    chunk = bench.size(1024, 128)
    data = np.random.default_rng(4).random((side, side), dtype=np.float32)
    fm = FileManager(BackendRegistry())
    bench.notes["4"] = (
        "Row 4: the baseline uses the codecs read back from an array ours wrote (so the same codec and "
        "level); both loads read one array written by raw zarr before the reps (page cache). Ours uses its default "
        "codec pipeline ('auto': zarrs in this process) and raw zarr its own; 4e-4h compare ours with "
        "codec_pipeline='zarrs' against ours with codec_pipeline='zarr'. Data: uniform random float32 (zstd "
        "compresses it 1.12x)."
    )
    return [
        *_compare_codec(bench, fm, data, (chunk, chunk), "zstd", ("4a", "4b")),
        *_compare_codec(bench, fm, data, (chunk, chunk), None, ("4c", "4d")),
        *_compare_pipelines(bench, data, (chunk, chunk), "zstd", ("4e", "4f")),
        *_compare_pipelines(bench, data, (chunk, chunk), None, ("4g", "4h")),
    ]
