"""Handler classes used only by the integration tests."""

import os
import socketserver
import time


class SlowHandler(socketserver.StreamRequestHandler):
    """Read one line 'SECONDS\\n', sleep that long, answer 'done PID\\n'."""

    def handle(self) -> None:
        seconds = float(self.rfile.readline() or b"0")
        time.sleep(seconds)
        self.wfile.write(f"done {os.getpid()}\n".encode())


class PidHandler(socketserver.StreamRequestHandler):
    """Answer each line with the worker PID, so tests can tell workers apart."""

    def handle(self) -> None:
        for _ in self.rfile:
            self.wfile.write(f"{os.getpid()}\n".encode())


class FailingHandler(socketserver.BaseRequestHandler):
    """Raise in handle(): the worker must log it and go on."""

    def handle(self) -> None:
        raise RuntimeError("boom from FailingHandler")
