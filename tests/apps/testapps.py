"""Handler classes used only by the integration tests."""

import os
import socketserver
import sys
import time


class SlowHandler(socketserver.StreamRequestHandler):
    """Read one line 'SECONDS\\n', sleep that long, answer 'done PID\\n'.

    It logs 'slow: PID sleeping S' first, so a test knows the request is in
    flight without sleeping itself.
    """

    def handle(self) -> None:
        seconds = float(self.rfile.readline() or b"0")
        sys.stderr.write(f"slow: {os.getpid()} sleeping {seconds}\n")
        sys.stderr.flush()
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


class SometimesFailingHandler(socketserver.StreamRequestHandler):
    """Raise on the line 'boom', else answer the worker PID: shows the worker survives."""

    def handle(self) -> None:
        line = self.rfile.readline().strip()
        if line == b"boom":
            raise RuntimeError("boom from SometimesFailingHandler")
        self.wfile.write(f"{os.getpid()}\n".encode())


class DatagramPidHandler(socketserver.DatagramRequestHandler):
    """Answer each datagram with 'PID DATA', so tests can tell workers apart.

    'sleep S ...' sleeps S seconds first (keeps a worker busy); 'boom' raises,
    to show the worker logs it and goes on.
    """

    def handle(self) -> None:
        data = self.rfile.read()
        if data == b"boom":
            raise RuntimeError("boom from DatagramPidHandler")
        if data.startswith(b"sleep "):
            time.sleep(float(data.split()[1]))
        self.wfile.write(b"%d %s" % (os.getpid(), data))


class EitherKindHandler(socketserver.BaseRequestHandler):
    """One plain BaseRequestHandler for stream and datagram listeners alike.

    A datagram arrives as (data, socket), as socketserver.UDPServer hands it:
    the answer is 'datagram PID DATA-UPPER'.  A connection gets one line and
    answers 'stream PID LINE-UPPER'.
    """

    def handle(self) -> None:
        if isinstance(self.request, tuple):
            data, sock = self.request
            sock.sendto(b"datagram %d %s" % (os.getpid(), data.upper()), self.client_address)
        else:
            line = self.request.makefile("rb").readline()
            self.request.sendall(b"stream %d %s" % (os.getpid(), line.upper()))
