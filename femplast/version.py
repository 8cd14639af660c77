"""femplast's version, written into every output file."""

__version__ = "0.1.0"
