"""What the run and the operations stand on: connections, SQL, names, the catalog, the lock, errors."""
