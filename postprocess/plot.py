"""Thin script: ``python postprocess/plot.py OUTDIR [--out FIGDIR] [--quiet]``.

The code lives in :mod:`femplast.postprocess` (importable wherever femplast is installed,
editable or not, with no top-level ``postprocess`` name in site-packages); this file is the
same as ``python -m femplast plot OUTDIR``.
"""

import sys

from femplast.postprocess.plot import main

if __name__ == "__main__":
    sys.exit(main())
