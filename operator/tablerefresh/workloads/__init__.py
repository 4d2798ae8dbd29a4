"""Reference workloads shipped with tablerefresh (demo, benchmark and test data)."""
