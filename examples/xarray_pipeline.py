"""A labelled dataset built on a Dask cluster, saved through polystore, reopened with xarray.

A synthetic daily surface temperature field (time x lat x lon, float32, in
kelvin: a seasonal cycle, warmer towards the equator, plus weather noise) is
generated block by block on the workers, then:

1. saved with ``DaskFileManager.save_array``, one zarr array per variable and
   coordinate in one directory (``climate.zarr``), each from an
   ``xarray.DataArray`` whose dims and attrs become the array's dimension
   names and attributes; the directory polystore creates is a zarr group;
2. reopened with ``xr.open_zarr(directory, consolidated=False)`` as an
   ``xarray.Dataset``, coordinates and attributes included;
3. reduced on the workers: the mean over time of each latitude (a zonal mean)
   and the warmest day, and read back with ``load_array(...,
   as_dataarray=True)`` to check one variable's labels;
4. summarised on the terminal.

No block of the field passes through the client. Run it with::

    python examples/xarray_pipeline.py                      # 2 local workers, a temporary directory
    python examples/xarray_pipeline.py --days 730 --size 360 --output results/
    python examples/xarray_pipeline.py --scheduler tcp://10.0.0.5:8786 --output /shared/run1
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np


# -- the field (pure numpy; it runs on the workers) ----------------------------------
def temperature_block(block: np.ndarray, block_info: dict | None = None, *, lat: np.ndarray, seed: int) -> np.ndarray:
    """Days ``start:stop`` of the field, computed from their indices and ``seed`` only (any chunking, same field)."""
    (day_start, day_stop), (lat_start, lat_stop), (lon_start, lon_stop) = block_info[None]["array-location"]
    days = np.arange(day_start, day_stop, dtype=np.float32)[:, None, None]
    latitude = lat[lat_start:lat_stop].astype(np.float32)[None, :, None]
    season = 12.0 * np.sin(2 * np.pi * (days - 80) / 365.25) * np.sin(np.deg2rad(latitude))
    base = 300.0 - 45.0 * np.sin(np.deg2rad(latitude)) ** 2
    noise = np.random.default_rng([seed, day_start, lat_start, lon_start]).normal(0, 2.0, block.shape)
    return (base + season + noise).astype(np.float32)


def build_dataset(days: int, size: int, seed: int):
    """The labelled variables and coordinates, as lazy DataArrays whose blocks the workers compute."""
    import dask.array as da
    import xarray as xr

    lat = np.linspace(-89.5, 89.5, size // 2, dtype=np.float64)
    lon = np.linspace(0, 360, size, endpoint=False, dtype=np.float64)
    shape, chunks = (days, lat.size, lon.size), (min(days, 30), lat.size, lon.size)
    field = da.empty(shape, dtype=np.float32, chunks=chunks).map_blocks(
        temperature_block, lat=lat, seed=seed, dtype=np.float32
    )
    return {
        "temperature": xr.DataArray(
            field, dims=("time", "lat", "lon"),
            attrs={"units": "K", "long_name": "surface air temperature", "source": "synthetic"},
        ),
        "time": xr.DataArray(da.arange(days, chunks=chunks[0]), dims="time", attrs={"units": "days since 2000-01-01"}),
        "lat": xr.DataArray(da.from_array(lat), dims="lat", attrs={"units": "degrees_north"}),
        "lon": xr.DataArray(da.from_array(lon), dims="lon", attrs={"units": "degrees_east"}),
    }


# -- the run ------------------------------------------------------------------------
def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--days", type=int, default=365, help="days of the field (default 365)")
    parser.add_argument("--size", type=int, default=240, help="longitudes (latitudes are half as many; default 240)")
    parser.add_argument("--output", help="directory to write into (default: a temporary one, removed afterwards)")
    parser.add_argument("--scheduler", help="address of a running scheduler (default: a LocalCluster)")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the weather noise")
    return parser.parse_args()


def main() -> None:
    arguments = parse_arguments()
    import xarray as xr
    from distributed import Client, LocalCluster

    from polystore_dask import DaskFileManager, PolystorePlugin

    output = os.path.abspath(arguments.output or tempfile.mkdtemp(prefix="polystore-xarray-"))
    if arguments.scheduler:
        client, cluster = Client(arguments.scheduler), None
    else:
        cluster = LocalCluster(n_workers=arguments.workers, threads_per_worker=1, dashboard_address=None)
        client = Client(cluster)
    try:
        client.register_plugin(PolystorePlugin())
        dfm = DaskFileManager(client)
        directory = os.path.join(output, "climate.zarr")
        variables = build_dataset(arguments.days, arguments.size, arguments.seed)

        began = time.perf_counter()
        for name, variable in variables.items():
            dfm.save_array(variable, os.path.join(directory, name), "zarr", overwrite=True)
        saved = time.perf_counter() - began

        dataset = xr.open_zarr(directory, consolidated=False)
        began = time.perf_counter()
        zonal_mean = dataset["temperature"].mean(dim=("time", "lon")).compute()
        warmest = dataset["temperature"].max(dim=("lat", "lon")).idxmax("time").compute()
        reduced = time.perf_counter() - began
        loaded = dfm.load_array(os.path.join(directory, "temperature"), "zarr", as_dataarray=True)

        size_mib = variables["temperature"].nbytes / 2**20
        print(f"cluster: {len(client.nthreads())} workers; output in {directory}")
        print(f"saved {len(variables)} arrays ({size_mib:.1f} MiB of temperature) in {saved:.2f} s")
        print("reopened with xr.open_zarr:")
        print(dataset)
        print(f"reduced on the workers in {reduced:.2f} s")
        print(f"zonal mean: equator {float(zonal_mean.sel(lat=0, method='nearest')):.1f} K, "
              f"poles {float(zonal_mean.isel(lat=0)):.1f} K and {float(zonal_mean.isel(lat=-1)):.1f} K")
        print(f"warmest day: {np.datetime_as_string(warmest.values, unit='D')}")
        print(f"load_array(as_dataarray=True): {loaded.name} {loaded.dims} {loaded.attrs['units']}")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        if not arguments.output:
            shutil.rmtree(output, ignore_errors=True)


if __name__ == "__main__":
    main()
