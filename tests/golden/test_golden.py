"""Refactors keep results: every shipped case (cut down, fixed seed) reproduces the digests
frozen in golden.json by the code before the restructuring, bit for bit (tests/golden/golden.py).
"""

import json

import pytest

from golden.golden_digest import CASES, GOLDEN, compute


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_outputs_equal_golden(name, tmp_path):
    want = json.loads(GOLDEN.read_text())[name]
    got = json.loads(json.dumps(compute([name], tmp_path)[name]))
    assert sorted(got) == sorted(want), "output files differ"
    bad = [(f, k) for f in want for k in set(want[f]) | set(got[f])
           if want[f].get(k) != got[f].get(k)]
    assert not bad, f"{len(bad)} items differ, e.g. {bad[:5]}"
