"""The single place the npeca version is written."""

__version__ = "0.1.0"
