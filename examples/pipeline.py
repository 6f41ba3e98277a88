"""An image pipeline on a Dask cluster, with every read and write through polystore.

A synthetic fluorescence-microscopy time-lapse (cells drifting over an unevenly
lit, noisy background; uint16) is generated on the workers, then:

1. written to a zarr array, each worker writing the frames it generated;
2. read back lazily, background-subtracted and smoothed frame by frame, and
   kept in the memory of the workers that computed it;
3. reduced, from worker memory, to a max projection over time, per-frame
   statistics and small per-frame thumbnails;
4. written to disk as ``.npy`` and ``.json`` files.

With ``--storage s3://bucket/prefix`` the same pipeline runs on a cluster
without a shared filesystem: the zarr array is kept in the bucket (zarr with
an ``s3://`` root) and the results go there too (the ``s3`` backend). The endpoint and credentials
come from the usual AWS environment of the workers (``AWS_ENDPOINT_URL``,
``AWS_ALLOW_HTTP``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, or instance credentials): nothing secret travels in the
plugin's options.

No full-size frame passes through the client. A progress bar follows each
step, and a table of sizes, times and throughputs ends the run.

``make demo`` runs it with the defaults (64 frames of 1536 x 1536, 288 MiB)
on a LocalCluster of 2 worker processes, in a temporary directory that is
removed afterwards. ``--help`` lists the options, for example::

    python examples/pipeline.py --frames 16 --size 512 --output results/
    python examples/pipeline.py --scheduler tcp://10.0.0.5:8786 --output /shared/run1
    AWS_ENDPOINT_URL=http://127.0.0.1:8333 python examples/pipeline.py --storage s3://my-bucket/run1
"""

from __future__ import annotations

import argparse
import os
import posixpath
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

MiB = 2**20
THUMBNAIL_BIN = 8


# -- the image model and the filters (pure numpy; they run on the workers) --------
def render_frames(start: int, stop: int, size: int, seed: int) -> np.ndarray:
    """Return frames ``start:stop`` of the time-lapse, as uint16.

    Each frame is computed from ``seed`` and its own index only, so any worker
    can produce any frame, and every chunking gives the same movie.
    """
    cells = np.random.default_rng(seed)
    count = max(8, round(300 * (size / 1536) ** 2))
    y0, x0 = cells.uniform(0, size, (2, count))
    vy, vx = cells.normal(0, 0.8, (2, count))
    sigma = cells.uniform(3, 7, count)
    brightness = cells.uniform(600, 3000, count)
    phase = cells.uniform(0, 2 * np.pi, count)
    axis = np.linspace(-1, 1, size, dtype=np.float32)
    illumination = 120 * (1 - 0.35 * (axis[:, None] ** 2 + axis[None, :] ** 2))
    grid = np.arange(size, dtype=np.float32)

    frames = np.empty((stop - start, size, size), dtype=np.uint16)
    for index, t in enumerate(range(start, stop)):
        frame = illumination.copy()
        cy = (y0 + vy * t + 3 * np.sin(0.2 * t + phase)) % size
        cx = (x0 + vx * t + 3 * np.cos(0.2 * t + phase)) % size
        for y, x, s, peak in zip(cy, cx, sigma, brightness * np.exp(-t / 150), strict=True):  # photobleaching
            r = int(3 * s) + 1
            rows = slice(max(int(y) - r, 0), min(int(y) + r + 1, size))
            cols = slice(max(int(x) - r, 0), min(int(x) + r + 1, size))
            gy = np.exp(-0.5 * ((grid[rows] - y) / s) ** 2)
            gx = np.exp(-0.5 * ((grid[cols] - x) / s) ** 2)
            frame[rows, cols] += (peak * gy)[:, None] * gx
        noise = np.random.default_rng([seed, t]).standard_normal((size, size), dtype=np.float32)
        frame += noise * np.sqrt(frame + 9)  # shot noise plus read noise
        frames[index] = np.clip(frame, 0, 65535)
    return frames


def generate_block(block_info: dict[Any, Any] | None = None, *, size: int, seed: int) -> np.ndarray:
    """``map_blocks`` creator: the frames of one block, made on the worker that runs it."""
    start, stop = block_info[None]["array-location"][0]
    return render_frames(start, stop, size, seed)


def box_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean of each row over a window of ``2 * radius + 1`` pixels (edges repeated).

    A running sum along the contiguous axis: about as fast as one copy of the frame.
    """
    width = 2 * radius + 1
    sums = np.cumsum(np.pad(image, ((0, 0), (radius + 1, radius)), mode="edge"), axis=1, dtype=np.float32)
    return (sums[:, width:] - sums[:, :-width]) / width


def clean_frames(block: np.ndarray, radius: int = 24) -> np.ndarray:
    """Subtract each frame's local background (a wide box mean), then smooth with a 3x3 binomial kernel."""
    cleaned = np.empty(block.shape, dtype=np.float32)
    for index, frame in enumerate(block.astype(np.float32)):
        background = box_mean(box_mean(frame, radius).T, radius).T
        signal = np.maximum(frame - background, 0)
        padded = np.pad(signal, 1, mode="edge")
        rows = (padded[:-2] + 2 * padded[1:-1] + padded[2:]) / 4
        cleaned[index] = (rows[:, :-2] + 2 * rows[:, 1:-1] + rows[:, 2:]) / 4
    return cleaned


def frame_statistics(block: np.ndarray) -> np.ndarray:
    """Per frame: mean, standard deviation, maximum, and the fraction of pixels in cells."""
    flat = block.reshape(len(block), -1)
    in_cells = (flat > 50).mean(axis=1)
    return np.stack([flat.mean(axis=1), flat.std(axis=1), flat.max(axis=1), in_cells], axis=1)


def thumbnails(block: np.ndarray) -> np.ndarray:
    """Each frame binned by ``THUMBNAIL_BIN`` in both directions (mean of each bin)."""
    frames, height, width = block.shape
    h, w = height // THUMBNAIL_BIN, width // THUMBNAIL_BIN
    trimmed = block[:, : h * THUMBNAIL_BIN, : w * THUMBNAIL_BIN]
    return trimmed.reshape(frames, h, THUMBNAIL_BIN, w, THUMBNAIL_BIN).mean(axis=(2, 4), dtype=np.float32)


# -- reporting ------------------------------------------------------------------------
def progress(futures: Any, label: str) -> None:
    """Show a progress bar until ``futures`` (and everything they depend on) are done.

    distributed's progress machinery counts the tasks; the bar redraws in
    place on a terminal and prints a line per quarter otherwise (logs, CI).
    """
    from distributed.diagnostics.progressbar import TextProgressBar

    class Bar(TextProgressBar):
        def __init__(self) -> None:
            self.interactive = sys.stdout.isatty()
            self.quarter = -1
            super().__init__(futures if isinstance(futures, list) else [futures], width=30, interval="200ms")

        def _draw_bar(self, remaining: int, all: int, **kwargs: Any) -> None:  # distributed passes ``all`` by name
            done = 1 - remaining / all if all else 1.0
            line = f"  {label:<36} [{'#' * int(30 * done):<30}] {done:4.0%} {self.elapsed:5.1f} s"
            if self.interactive:
                sys.stdout.write("\r" + line)
            elif int(done * 4) > self.quarter:
                self.quarter = int(done * 4)
                sys.stdout.write(line + "\n")
            sys.stdout.flush()

        def _draw_stop(self, **kwargs: Any) -> None:
            if self.interactive:
                sys.stdout.write("\n")
            if kwargs.get("status") == "error":
                sys.stdout.write(f"  {label}: failed\n")
            sys.stdout.flush()

    Bar()


def human_size(nbytes: int) -> str:
    if nbytes < 1024:
        return f"{nbytes} bytes"
    return f"{nbytes / 1024:.1f} KiB" if nbytes < MiB else f"{nbytes / MiB:.1f} MiB"


@dataclass
class Step:
    name: str
    nbytes: int
    seconds: float


def timed(steps: list[Step], name: str, nbytes: int, run: Callable[[], Any]) -> Any:
    """Run ``run()``, recording its wall time and the bytes it handled as a step."""
    start = time.perf_counter()
    result = run()
    steps.append(Step(name, nbytes, time.perf_counter() - start))
    return result


def print_summary(steps: list[Step], total_seconds: float) -> None:
    print()
    print(f"{'step':<36} {'size MiB':>9} {'seconds':>8} {'MB/s':>8}")
    print("-" * 64)
    for step in steps:
        rate = step.nbytes / 1e6 / step.seconds if step.seconds else float("inf")
        print(f"{step.name:<36} {step.nbytes / MiB:>9.1f} {step.seconds:>8.2f} {rate:>8.1f}")
    print("-" * 64)
    print(f"{'total wall time':<36} {'':>9} {total_seconds:>8.2f}")


# -- the pipeline -----------------------------------------------------------------------
@dataclass
class Storage:
    """Where the pipeline keeps the results (a backend name), and where its backends point."""

    results: str
    where: str


def run_pipeline(client: Any, storage: Storage, frames: int, size: int, seed: int = 2024) -> list[Step]:
    """Run the four steps on ``client``'s cluster, keeping data on the backends ``storage`` names."""
    import dask.array as da

    from polystore_dask import DaskFileManager

    dfm = DaskFileManager(client)
    steps: list[Step] = []
    shape = (frames, size, size)
    raw_bytes = frames * size * size * np.dtype(np.uint16).itemsize
    movie_size = f"{frames} frames of {size} x {size} uint16 = {raw_bytes / MiB:.1f} MiB"
    print(f"time-lapse: {movie_size}, output in {storage.where}")
    raw_path = "raw/timelapse.zarr"

    # 1. Generate on the workers and write to zarr: each task writes the
    #    chunk (one frame) it generated.
    movie = da.map_blocks(
        generate_block, size=size, seed=seed, chunks=((1,) * frames, (size,), (size,)), dtype=np.uint16,
        meta=np.empty((0, 0, 0), dtype=np.uint16),
    )

    write_label = "generate + write zarr"

    def write_raw() -> None:
        written = client.compute(dfm.save_array(movie, raw_path, "zarr", overwrite=True, compute=False))
        progress(written, write_label)
        written.result()

    timed(steps, write_label, raw_bytes, write_raw)

    # 2. Read lazily, clean each frame, keep the result in worker memory.
    raw = dfm.load_array(raw_path, "zarr")
    assert raw.shape == shape and raw.dtype == np.uint16
    cleaned = raw.map_blocks(clean_frames, dtype=np.float32)

    clean_label = "read zarr + filter -> worker memory"

    def clean_to_memory() -> None:
        stored = client.compute(dfm.save_array(cleaned, "scratch/cleaned", backend="memory", compute=False))
        progress(stored, clean_label)
        stored.result()

    timed(steps, clean_label, raw_bytes, clean_to_memory)

    # 3. Reduce from worker memory. The projection stays on the workers (a
    #    Future); the statistics and thumbnails are small enough to gather.
    kept = dfm.load_array("scratch/cleaned", "memory")
    thumb = size // THUMBNAIL_BIN
    reductions = [
        kept.max(axis=0),
        kept.map_blocks(frame_statistics, chunks=(kept.chunks[0], (4,)), drop_axis=2, dtype=np.float64),
        kept.map_blocks(thumbnails, chunks=(kept.chunks[0], (thumb,), (thumb,)), dtype=np.float32),
    ]

    def reduce_from_memory() -> tuple[Any, np.ndarray, np.ndarray]:
        projection, statistics, thumbs = client.compute(reductions)
        progress([projection, statistics, thumbs], "memory -> projection, stats, thumbs")
        return projection, statistics.result(), thumbs.result()

    projection, statistics, thumbs = timed(
        steps, "memory -> projection, stats, thumbs", kept.nbytes, reduce_from_memory
    )

    # 4. Write the results (to disk, or to the bucket).
    stats = {
        "frames": frames,
        "size": size,
        "columns": ["mean", "std", "max", "cell_fraction"],
        "per_frame": np.round(statistics, 4).tolist(),
    }
    thumb_paths = [f"results/thumbnails/frame_{t:04d}.npy" for t in range(frames)]
    result_bytes = reductions[0].nbytes + thumbs.nbytes

    results = storage.results
    results_label = f"write results to {results}"

    def write_results() -> None:
        writes = [
            dfm.save(projection, "results/max_projection.npy", results, overwrite=True),
            dfm.save(stats, "results/frame_stats.json", results, overwrite=True),
            dfm.save_batch(list(thumbs), thumb_paths, results, overwrite=True),
        ]
        progress(writes, results_label)
        client.gather(writes)

    timed(steps, results_label, result_bytes, write_results)

    # Check a result round-trips, then show what was written where.
    saved = dfm.load("results/max_projection.npy", results).result()
    assert saved.shape == (size, size) and saved.dtype == np.float32
    print()
    print("written:")
    for path in dfm.list_files("raw", "zarr"):
        print(f"  zarr   {path:<34} {human_size(dfm.stat(path, 'zarr')['size']):>10}")
    for path in dfm.list_files("results", results):
        print(f"  {results:<6} {path:<34} {human_size(dfm.stat(path, results)['size']):>10}")
    listed = dfm.list_files("results/thumbnails", results, extensions={".npy"})
    first, last = posixpath.basename(listed[0]), posixpath.basename(listed[-1])
    print(f"  {results:<6} results/thumbnails/ {len(listed)} files: {first} ... {last}")
    print(
        f"  memory scratch/ holds {dfm.list_dir('scratch', 'memory')}: "
        f"{kept.numblocks[0]} blocks, each on the worker that made it"
    )
    bleaching = statistics[-1, 0] / statistics[0, 0] if statistics[0, 0] else float("nan")
    print(f"mean signal, last frame / first frame: {bleaching:.2f} (photobleaching)")
    dfm.delete("scratch", "memory", recursive=True).result()
    return steps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Generate a synthetic microscopy time-lapse on a Dask cluster, write it to zarr, "
        "filter it through worker memory and write results to disk, all through polystore.",
    )
    parser.add_argument("--frames", type=int, default=64, help="number of frames in the time-lapse (default: 64)")
    parser.add_argument("--size", type=int, default=1536, help="frame height and width in pixels (default: 1536)")
    parser.add_argument(
        "--output", metavar="DIR",
        help="directory for the zarr array and the results, kept after the run "
        "(default: a fresh temporary directory, removed at the end unless --keep)",
    )
    parser.add_argument(
        "--scheduler", metavar="ADDRESS",
        help="address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786; its workers must see --output "
        "(a shared filesystem). Any polystore plugin already registered there is replaced. "
        "Default: start a LocalCluster",
    )
    parser.add_argument(
        "--workers", type=int, default=2,
        help="worker processes of the LocalCluster, one thread each (default: 2; ignored with --scheduler)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary output directory and print where it is")
    parser.add_argument(
        "--storage", metavar="s3://BUCKET/PREFIX",
        help="run without a shared filesystem: the zarr array and the results go to this bucket and prefix "
        "(endpoint and credentials from the workers' AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_REGION). "
        "Default: everything under --output",
    )
    args = parser.parse_args(argv)
    if args.frames < 1 or args.size < THUMBNAIL_BIN or args.workers < 1:
        parser.error(f"--frames and --workers must be at least 1, --size at least {THUMBNAIL_BIN}")
    if args.storage is not None:
        parts = urlsplit(args.storage)
        if parts.scheme != "s3" or not parts.netloc:
            parser.error(f"--storage must look like s3://bucket/prefix, not {args.storage!r}")
    return args


def s3_options(url: str) -> dict[str, Any]:
    """``S3Backend`` options for ``s3://bucket/prefix``; endpoint and credentials come from each worker."""
    parts = urlsplit(url)
    return {"bucket": parts.netloc, "prefix": parts.path.strip("/")}


def has_polystore_plugin(dask_scheduler: Any) -> bool:
    """Run on the scheduler: whether a polystore plugin is registered for its workers."""
    return "polystore" in dask_scheduler.worker_plugins


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Imported after parsing, so that --help and argument errors answer at once.
    from distributed import Client, LocalCluster

    from polystore_dask import PolystorePlugin

    started = time.perf_counter()
    output = os.path.realpath(args.output or tempfile.mkdtemp(prefix="polystore-demo-"))
    os.makedirs(output, exist_ok=True)
    cluster = None
    try:
        if args.scheduler:
            client = Client(args.scheduler)
        else:
            cluster = LocalCluster(
                n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                # No dashboard; the scheduler's small HTTP server (health, metrics) takes
                # any free local port rather than warning when 8787 is taken.
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            )
            client = Client(cluster)
        with client:
            if args.scheduler and client.run_on_scheduler(has_polystore_plugin):
                print("replacing the polystore plugin already registered on this cluster with this run's options")
                client.unregister_worker_plugin("polystore")
            if args.storage is None:
                # Every worker builds its own registry; disk and zarr paths resolve under output.
                options: dict[str, Any] = {"disk": {"root": output}, "zarr": {"root": output}}
                storage = Storage(results="disk", where=output)
            else:
                # No shared filesystem: the zarr array and the results in the bucket.
                s3 = s3_options(args.storage)
                options = {"s3": s3, "zarr": {"root": f"s3://{s3['bucket']}/{s3['prefix']}".rstrip("/")}}
                storage = Storage(results="s3", where=args.storage)
            client.register_plugin(PolystorePlugin(options=options))
            threads = client.nthreads()
            workers = f"{len(threads)} workers, {sum(threads.values())} threads"
            print(f"cluster: {workers}, scheduler {client.scheduler.address}")
            steps = run_pipeline(client, storage, args.frames, args.size)
    finally:
        if cluster is not None:
            cluster.close()
        if not (args.output or args.keep):
            shutil.rmtree(output, ignore_errors=True)
    print_summary(steps, time.perf_counter() - started)
    if args.output or args.keep:
        print(f"\noutput kept in {output}")


if __name__ == "__main__":
    main()
