"""The master process: arbiter (decisions), master (the I/O shell), systemd."""
