"""Request parsing cost: prefork's own parser against httptools (llhttp) and h11.

Parses the same requests with each parser in one run and prints microseconds
per request and the ratio to httptools.  It is how the parser choice in
benchmarks/README.md was made; rerun it after changing the parser.

    python benchmarks/parser.py            # pip install httptools h11 to compare

A parser that is not installed is left out.  Never run as a test.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from prefork.servers.http.parser import RequestParser  # noqa: E402

REQUESTS = {
    "wrk GET": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
    "browser GET": (b"GET /articles/2026/11/prefork?page=2&sort=new HTTP/1.1\r\n"
                    b"Host: example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:140.0)\r\n"
                    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
                    b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
                    b"Referer: https://example.com/articles\r\nConnection: keep-alive\r\n"
                    b"Cookie: session=0123456789abcdef; theme=dark\r\n\r\n"),
    "POST 1 KiB": (b"POST /api/items HTTP/1.1\r\nHost: api.example.com\r\n"
                   b"Content-Type: application/json\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024),
}


def ours() -> Callable[[bytes], None]:
    parser = RequestParser()

    def parse(data: bytes) -> None:
        parser.feed(data)
        parser.next_head()
        parser.read_body()
    return parse


def httptools_parser() -> Callable[[bytes], None]:
    import httptools

    class Events:
        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_headers_complete(self) -> None:
            pass

        def on_body(self, body: bytes) -> None:
            self.body = body

        def on_message_begin(self) -> None:
            self.headers = []

    parser = httptools.HttpRequestParser(Events())
    return parser.feed_data


def h11_parser() -> Callable[[bytes], None]:
    import h11

    def parse(data: bytes) -> None:
        conn = h11.Connection(h11.SERVER)    # h11 wants a response before the next request
        conn.receive_data(data)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.EndOfMessage):
                return
    return parse


def per_request(parse: Callable[[bytes], None], data: bytes, rounds: int = 7,
                count: int = 20000) -> float:
    """Best-of-rounds microseconds per request: the least disturbed measurement."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(count):
            parse(data)
        best = min(best, (time.perf_counter() - start) / count * 1e6)
    return best


def main() -> int:
    makers: Dict[str, Callable[[], Callable[[bytes], None]]] = {
        "prefork": ours, "httptools": httptools_parser, "h11": h11_parser}
    print("| request | parser | us/request | ratio to httptools |")
    print("| --- | --- | ---: | ---: |")
    for label, data in REQUESTS.items():
        row: List[tuple] = []
        for name, make in makers.items():
            try:
                parse = make()
            except ImportError:
                continue
            row.append((name, per_request(parse, data)))
        base = dict(row).get("httptools")
        for name, micros in row:
            ratio = f"{micros / base:.1f}" if base else "-"
            print(f"| {label} | {name} | {micros:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
