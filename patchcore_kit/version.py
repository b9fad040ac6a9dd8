"""The kit's version, in one place: the package and the Dask workers' version check read it here."""

__version__ = "0.1.0"
