"""Reference clusterings for token pooling (tests/pool.rs), made with scipy
exactly as PyLate's `hierarchical_pooling` calls it:

    D = 1 - x @ x.T                       (x: unit vectors, float32)
    Z = scipy.cluster.hierarchy.linkage(D, method="ward")
    labels = scipy.cluster.hierarchy.fcluster(Z, t=max(n // f, 1), criterion="maxclust")

Seeded random unit vectors of a few awkward sizes; writes
tests/fixtures/pooling/ward_scipy.json: per case n, dim, factor, the vectors
(float32 values as written) and scipy's labels. Run with the reference venv
(`/work/.venv-qwen/bin/python scripts/reference/make_pooling_fixtures.py`);
tests never need Python.
"""

import json
import pathlib
import sys

import numpy as np
import scipy
from scipy.cluster import hierarchy

out = pathlib.Path(__file__).resolve().parents[2] / "tests/fixtures/pooling/ward_scipy.json"
rng = np.random.default_rng(20241)
cases = []
for n, dim, factor in [(2, 8, 2), (7, 16, 2), (31, 32, 3), (33, 16, 2), (64, 32, 4), (97, 16, 2)]:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    # A few near-duplicate groups, as real token vectors have.
    for g in range(0, n - 2, 5):
        x[g + 1] = x[g] + 0.05 * rng.standard_normal(dim).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    d = 1 - x @ x.T
    z = hierarchy.linkage(d, method="ward")
    k = max(n // factor, 1)
    labels = hierarchy.fcluster(z, t=k, criterion="maxclust")
    cases.append(
        {
            "n": n,
            "dim": dim,
            "factor": factor,
            "clusters": int(k),
            "vectors": [float(v) for v in x.reshape(-1)],
            "labels": [int(l) for l in labels],
        }
    )
out.write_text(
    json.dumps(
        {"scipy": scipy.__version__, "numpy": np.__version__, "python": sys.version.split()[0], "cases": cases}
    )
)
print(f"wrote {out}: {len(cases)} cases")
