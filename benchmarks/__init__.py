"""Benchmarks of polystore against plain numpy, zarr and Dask (issue #5).

Run ``python -m benchmarks`` (``make bench``) for the full sizes, which
rewrites ``benchmarks/results.md``, or ``python -m benchmarks --quick``
(``make bench-quick``) for tiny sizes that only check everything runs.
Each area is a module whose ``run(bench, rows)`` returns result rows.
"""
