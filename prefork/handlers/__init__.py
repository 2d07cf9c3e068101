"""What runs inside a worker: socketserver handler classes (stream)."""
