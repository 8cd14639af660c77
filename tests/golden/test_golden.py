"""Refactors keep results: every shipped case (cut down, fixed seed) reproduces the digests
frozen in golden.json by the code before the restructuring, bit for bit
(tests/golden/golden_digest.py). New output files and attributes are allowed; every frozen
dataset, attribute and summary number must be present and identical.
"""

import json

import pytest

from golden.golden_digest import CASES, GOLDEN, compute


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_outputs_equal_golden(name, tmp_path):
    want = json.loads(GOLDEN.read_text())[name]
    got = json.loads(json.dumps(compute([name], tmp_path)[name]))
    missing = sorted(set(want) - set(got))
    assert not missing, f"output files missing: {missing}"
    # every frozen item is there and equal; a unified layout may add items (new attributes)
    bad = [(f, k) for f in want for k in want[f] if want[f][k] != got[f].get(k)]
    assert not bad, f"{len(bad)} items differ, e.g. {bad[:5]}"
