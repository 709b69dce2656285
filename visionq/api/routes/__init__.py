"""One module per resource: jobs, the synchronous detect shortcut, models and health."""
