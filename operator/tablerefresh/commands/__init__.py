"""Thin command-line adapters: parse arguments, call the planes, map outcomes to exit codes."""
