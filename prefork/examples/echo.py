"""Upper-casing echoes, written exactly as for socketserver.TCPServer and UDPServer.

    prefork serve prefork.examples.echo:UpperEchoHandler -b 127.0.0.1:9000
    printf 'hello\n' | nc 127.0.0.1 9000        # -> HELLO

    prefork serve prefork.examples.echo:UDPEchoHandler -b udp://127.0.0.1:9000
    printf 'hello\n' | nc -u -w1 127.0.0.1 9000  # -> HELLO
"""

import socketserver


class UpperEchoHandler(socketserver.StreamRequestHandler):
    """Echo each line back in upper case until the client closes."""

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


class UDPEchoHandler(socketserver.DatagramRequestHandler):
    """Echo each datagram back to its sender in upper case (also over unix-dgram:)."""

    def handle(self) -> None:
        # rfile holds the datagram; what goes to wfile is sent back by finish().
        self.wfile.write(self.rfile.read().upper())
