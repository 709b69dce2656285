"""The HTTP API: uploads become queued jobs, jobs are read back, cancelled and deleted."""
