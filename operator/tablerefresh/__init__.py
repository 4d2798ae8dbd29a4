"""tablerefresh: keep derived ClickHouse tables fresh and duplicate-free, from Kubernetes or locally."""

__version__ = "0.1.0"
