"""The access console: the `jump` command used by engineers and CI scripts."""

__version__ = "0.1.0"
