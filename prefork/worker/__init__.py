"""The worker process: lifecycle, serve loop, dispatchers."""
