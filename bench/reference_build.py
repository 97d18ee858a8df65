"""Reference build on 1M rows x 20 columns: seconds and stored profile size (issue 3, acceptance 4).

Run with `make bench-reference`. Prints one JSON line. The baseline in the same run is the time to read
the file alone, so the figure that matters, the profiling cost, is reported next to it.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from monitor.core.schema import FieldSpec
from monitor.profile.build import build_profile, read_table
from monitor.profile.store import profile_size

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000


def main() -> None:
    rng = np.random.default_rng(0)
    cols: dict[str, np.ndarray] = {}
    for i in range(15):
        cols[f"num_{i}"] = rng.lognormal(i % 4, 0.7, ROWS) if i % 2 else rng.normal(i, 1 + i, ROWS)
    for i in range(5):
        cats = np.array([f"cat_{i}_{k}" for k in range(5 + 20 * i)])
        cols[f"cat_{i}"] = cats[rng.zipf(1.5, ROWS) % len(cats)]
    specs = [FieldSpec(n, "numeric" if n.startswith("num") else "categorical", False) for n in cols]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.parquet"
        pq.write_table(pa.table(cols), path)
        t0 = time.perf_counter()
        columns = read_table(path)
        t1 = time.perf_counter()
        profile = build_profile("bench", specs, columns, version="v1", source=path.name, sentinels={},
                                time_field=None)
        t2 = time.perf_counter()
    print(json.dumps({"rows": ROWS, "columns": len(cols), "read_s": round(t1 - t0, 3),
                      "profile_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3),
                      "profile_bytes": profile_size(profile), "target_s": 60, "target_bytes": 200 * 1024}))


if __name__ == "__main__":
    main()
