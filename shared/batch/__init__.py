"""Batch jobs: queue messages, job records, CSV and JSON Lines input and output, the runner and the fan-out."""
