"""The data plane: refresh a ClickHouse table slice. No Kubernetes imports here."""
