"""The Celery worker: its app (with each process's Runtime) and the tasks it runs."""
