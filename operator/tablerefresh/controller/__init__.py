"""The control plane: TableRefresh -> CronJob, status, health. No refresh SQL here."""
