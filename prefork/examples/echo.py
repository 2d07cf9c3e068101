"""An upper-casing line echo, written exactly as for socketserver.TCPServer.

    prefork serve prefork.examples.echo:UpperEchoHandler -b 127.0.0.1:9000
    printf 'hello\n' | nc 127.0.0.1 9000        # -> HELLO
"""

import socketserver


class UpperEchoHandler(socketserver.StreamRequestHandler):
    """Echo each line back in upper case until the client closes."""

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())
