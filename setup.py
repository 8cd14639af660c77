"""Build hook: ship the cases, reference data and mesh scripts in the wheel.

They live at the repository root (tests, run.sh and the README use them there); the wheel
gets a copy under ``femplast/examples/`` so that ``femplast examples DIR`` works after
``pip install`` (:mod:`femplast.app.examples`). Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("cases", "reference", "meshes")  # = femplast.app.examples.SHIPPED


class BuildWithExamples(build_py):
    def run(self):
        super().run()
        root = Path(__file__).resolve().parent
        for sub in SHIPPED:
            dst = Path(self.build_lib) / "femplast" / "examples" / sub
            shutil.copytree(root / sub, dst, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithExamples})
