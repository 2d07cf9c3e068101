"""GET /status and /status.json at metrics_bind, read by HTTP clients and by headless Chromium."""

import json
import re
import shutil
import socket
import struct
import subprocess
import urllib.request
import zlib
from pathlib import Path

import pytest

from harness import child_env, wait_until

pytestmark = pytest.mark.integration

EVIL = "/slow/<script>alert(1)</script>"


def start(prefork_server, workers: int = 2):
    server = prefork_server("serve", "wsgiapps:router", "-b", "127.0.0.1:0",
                            "-w", str(workers),
                            "--metrics-bind", "127.0.0.1:0")
    server.wait_ready()
    m = re.search(r"metrics at http://([\d.]+):(\d+)/metrics", server.log())
    assert m, server.log()
    return server, (m.group(1), int(m.group(2)))


def get(address: tuple, path: str, method: str = "GET"):
    """(status, content type, body) of one request."""
    request = urllib.request.Request(f"http://{address[0]}:{address[1]}{path}", method=method)
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.status, r.headers["Content-Type"], r.read().decode()


def hit(address: tuple, count: int) -> None:
    for _ in range(count):
        with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/hello/",
                                    timeout=10) as r:
            r.read()


def slow_request(address: tuple, seconds: int) -> socket.socket:
    """A request in flight whose target holds a <script> tag, sent raw (no client quoting)."""
    conn = socket.create_connection(address, timeout=30)
    conn.sendall(f"GET {EVIL}?t={seconds} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return conn


def history_peak(page: str) -> float:
    m = re.search(r"peak ([\d.]+) req/s", page)
    return float(m.group(1)) if m else 0.0


@pytest.mark.timeout(60)
def test_status_json_and_html_with_http_clients(prefork_server):
    server, metrics = start(prefork_server)
    pids = server.wait_workers(lambda p: len(p) == 2)

    code, kind, body = get(metrics, "/status.json")
    assert code == 200 and kind == "application/json"
    report = json.loads(body)
    assert report["pid"] == server.pid and report["workers_wanted"] == 2
    assert {w["pid"] for w in report["workers"]} == pids
    assert report["listeners"][0]["name"] == "%s:%d" % server.address

    code, kind, page = get(metrics, "/status")
    assert code == 200 and kind == "text/html; charset=utf-8"
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    for pid in pids | {server.pid}:
        assert str(pid) in page
    assert get(metrics, "/status", "HEAD")[2] == ""
    assert get(metrics, "/metrics")[1].startswith("text/plain")

    # The history: a sample every 5 s; after some requests the chart has a rate.
    hit(server.address, 20)
    pages = []

    def charted() -> bool:
        pages.append(get(metrics, "/status")[2])
        return history_peak(pages[-1]) > 0
    wait_until(charted, 15, "a request rate in the chart")
    samples = int(re.search(r'data-samples="(\d+)"', pages[-1]).group(1))
    assert samples >= 2 and "<rect" in pages[-1]

    # The request in progress is shown, escaped.
    conn = slow_request(server.address, 20)
    try:
        server.wait_for(r"slow: start")

        def shown() -> bool:
            pages.append(get(metrics, "/status")[2])
            return "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[-1]
        wait_until(shown, 10, "the request in progress on the page")
        assert "<script" not in pages[-1]
        busy = [w for w in json.loads(get(metrics, "/status.json")[2])["workers"] if w["busy"]]
        assert len(busy) == 1 and "<script>" in busy[0]["doing"]
    finally:
        conn.close()


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (Debian: apt-get install chromium)")


def png_pixels(data: bytes):
    """(width, height, set of distinct pixels) of an 8-bit RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    colours = set()
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous))
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b, c = previous[i], previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        if y % 3 == 0:      # every third row is plenty to tell a page from a blank
            view = bytes(line)
            colours.update(view[i:i + 3] for i in range(0, stride, channels))
        previous = line
    return width, height, colours


@pytest.mark.timeout(120)
def test_status_page_in_headless_chromium(prefork_server, tmp_path: Path):
    browser = chromium()
    server, metrics = start(prefork_server)
    server.wait_workers(lambda p: len(p) == 2)
    hit(server.address, 30)
    wait_until(lambda: history_peak(get(metrics, "/status")[2]) > 0, 15, "a rate charted")
    conn = slow_request(server.address, 60)
    try:
        server.wait_for(r"slow: start")
        shot = tmp_path / "status.png"
        url = f"http://{metrics[0]}:{metrics[1]}/status"
        result = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
             "--window-size=1200,900", url],
            capture_output=True, text=True, timeout=90, env=child_env(),
            stdin=subprocess.DEVNULL, cwd=str(tmp_path))
        assert shot.exists(), (result.returncode, result.stderr[-3000:])
    finally:
        conn.close()
    width, height, colours = png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 900)
    # Text, table borders, the busy row and the chart's bars: far more than a blank page.
    assert len(colours) > 20, len(colours)
    assert (0x3B, 0x7D, 0xD8) in {tuple(c) for c in colours}, "no chart bar in the screenshot"
