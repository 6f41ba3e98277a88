"""The examples run as a user would run them, and the example backend meets the contract."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from polystore import BackendRegistry, FileManager
from polystore.testing import BackendTests

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))

from custom_backend import GzipNpyBackend  # noqa: E402  (the examples directory is not a package)


def run_example(name: str, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` with this interpreter, the way ``python examples/<name>`` does."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"{name} {' '.join(args)} exited {result.returncode}\n--- stderr ---\n{result.stderr[-4000:]}"
    )
    return result


class TestGzipNpyBackendConformance(BackendTests):
    suffixes = {"array": ".npy.gz"}

    @pytest.fixture
    def backend(self, tmp_path: Path) -> GzipNpyBackend:
        return GzipNpyBackend(root=tmp_path)


def test_custom_backend_is_in_the_registry_and_compresses(tmp_path: Path) -> None:
    fm = FileManager(BackendRegistry({"npygz": {"root": tmp_path}}))
    data = np.zeros((256, 256), dtype=np.float64)
    fm.save(data, "zeros.npy.gz", "npygz")
    np.testing.assert_array_equal(fm.load("zeros.npy.gz", "npygz"), data)
    assert fm.stat("zeros.npy.gz", "npygz")["size"] < data.nbytes / 10


# -- the scripts, run as a user runs them --------------------------------------------
def test_pipeline_help_documents_every_option(tmp_path: Path) -> None:
    result = run_example("pipeline.py", "--help", cwd=tmp_path)
    for option in ("--frames", "--size", "--output", "--scheduler", "--workers", "--keep", "--storage"):
        assert option in result.stdout


def test_pipeline_refuses_a_storage_that_is_not_an_s3_url(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "pipeline.py"), "--storage", "/shared/run1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "--storage must look like s3://bucket/prefix, not '/shared/run1'" in result.stderr


def test_pipeline_with_output_writes_results_and_prints_the_summary(tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = run_example("pipeline.py", "--frames", "4", "--size", "128", "--output", str(output), cwd=tmp_path)
    header = re.search(r"^step\s+size MiB\s+seconds\s+MB/s$", result.stdout, flags=re.M)
    assert header, result.stdout
    summary = result.stdout[header.end():]
    for step in ("generate + write zarr", "read zarr + filter", "memory -> projection", "write results to disk"):
        assert step in summary
    assert (output / "raw" / "timelapse.zarr" / "zarr.json").is_file()
    projection = np.load(output / "results" / "max_projection.npy")
    assert projection.shape == (128, 128) and projection.dtype == np.float32
    stats = json.loads((output / "results" / "frame_stats.json").read_text())
    assert len(stats["per_frame"]) == 4
    assert len(list((output / "results" / "thumbnails").glob("*.npy"))) == 4


def test_pipeline_on_an_existing_scheduler_removes_its_temporary_output(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    from polystore_dask import PolystorePlugin

    quiet_http = {"dashboard_address": "127.0.0.1:0"}  # no "port 8787 in use" warning when another cluster runs
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None, scheduler_kwargs=quiet_http
    ) as cluster, Client(cluster) as client:
        client.register_plugin(PolystorePlugin())  # replaced by the pipeline's own options
        result = run_example(
            "pipeline.py", "--frames", "2", "--size", "64", "--scheduler", cluster.scheduler_address, cwd=tmp_path
        )
        assert "cluster: 1 workers" in result.stdout
        assert "replacing the polystore plugin" in result.stdout
    output = re.search(r"output in (\S+)", result.stdout)
    assert output and not Path(output.group(1)).exists()


def test_xarray_pipeline_saves_a_dataset_xarray_reopens_and_reduces(tmp_path: Path) -> None:
    import xarray as xr

    output = tmp_path / "out"
    result = run_example("xarray_pipeline.py", "--days", "40", "--size", "32", "--output", str(output), cwd=tmp_path)
    assert "saved 4 arrays" in result.stdout and "reopened with xr.open_zarr" in result.stdout
    assert "load_array(as_dataarray=True): temperature ('time', 'lat', 'lon') K" in result.stdout
    equator, south, north = map(float, re.search(
        r"zonal mean: equator ([\d.]+) K, poles ([\d.]+) K and ([\d.]+) K", result.stdout
    ).groups())
    assert equator > south and equator > north  # warmer towards the equator, as the field is made
    dataset = xr.open_zarr(output / "climate.zarr", consolidated=False)
    assert dict(dataset.sizes) == {"time": 40, "lat": 16, "lon": 32}
    assert dataset["temperature"].attrs["units"] == "K" and "lat" in dataset.coords
    assert 230 < float(dataset["temperature"].mean()) < 310


def test_quickstart_runs(tmp_path: Path) -> None:
    result = run_example("quickstart.py", cwd=tmp_path)
    assert "backends:" in result.stdout


def test_custom_backend_script_saves_and_loads_on_the_workers(tmp_path: Path) -> None:
    result = run_example("custom_backend.py", cwd=tmp_path)
    assert "backend 'npygz' on 2 workers" in result.stdout
    assert "frames/frame_007.npy.gz" in result.stdout
