"""Commands that change or inspect a target besides the run: dedupe, backups and restore, verify."""
