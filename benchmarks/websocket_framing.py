"""WebSocket framing cost: wsproto against the ``websockets`` package's sans-IO layer.

Both libraries do the same work an ASGI server does per message, in one
process, on the same bytes:

- receive: masked client-to-server frames (made here, by neither library)
  fed in 256 KiB reads (asyncio's read size) until every message is out as
  the ``str`` or ``bytes`` an ASGI ``websocket.receive`` carries (text
  decoded and so checked as UTF-8, fragments joined);
- send: ``str`` or ``bytes`` messages serialised to unmasked server frames.

It prints microseconds per message, best of ``--rounds``, and the ratio
wsproto / websockets (above 1: websockets is faster).  It is how the
framing library of prefork/servers/asgi/websocket.py was chosen; rerun it
after upgrading either library.

    python benchmarks/websocket_framing.py [--count 100000] [--rounds 5]

A library that is not installed is left out.  Never run as a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import struct
import time
from typing import Callable, Dict, List, Tuple, Union

Message = Union[str, bytes]
READ_SIZE = 256 * 1024


def client_frame(payload: bytes, opcode: int, fin: bool = True) -> bytes:
    """One masked frame as a browser sends it (RFC 6455 5.2), independent of both libraries."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 1 << 16:
        head += struct.pack("!BH", 0x80 | 126, n)
    else:
        head += struct.pack("!BQ", 0x80 | 127, n)
    key = os.urandom(4)
    # XOR with the key repeated, as one big-integer operation.
    mask = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
    return bytes(head) + key + masked


def stream(messages: List[Message]) -> List[bytes]:
    """The messages as client frames, cut into reads of READ_SIZE bytes."""
    data = b"".join(client_frame(m.encode() if isinstance(m, str) else m,
                                 1 if isinstance(m, str) else 2) for m in messages)
    return [data[i:i + READ_SIZE] for i in range(0, len(data), READ_SIZE)]


# -- websockets (sans-IO Protocol) --------------------------------------------

def websockets_receive(reads: List[bytes]) -> List[Message]:
    from websockets.frames import Opcode
    from websockets.protocol import Protocol, Side, State
    quiet = logging.getLogger("bench.websockets")
    quiet.setLevel(logging.WARNING)
    proto = Protocol(Side.SERVER, state=State.OPEN, max_size=16 << 20, logger=quiet)
    out: List[Message] = []
    parts: List[bytes] = []
    text = False
    TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
    for data in reads:
        proto.receive_data(data)
        for frame in proto.events_received():
            opcode = frame.opcode
            if opcode is TEXT or opcode is BINARY:
                if frame.fin:
                    out.append(frame.data.decode() if opcode is TEXT else frame.data)
                    continue
                text, parts = opcode is TEXT, [frame.data]
            elif opcode is CONT:
                parts.append(frame.data)
                if frame.fin:
                    whole = b"".join(parts)
                    out.append(whole.decode() if text else whole)
        proto.data_to_send()
    return out


def websockets_send(messages: List[Message]) -> int:
    from websockets.protocol import Protocol, Side, State
    proto = Protocol(Side.SERVER, state=State.OPEN)
    size = 0
    for m in messages:
        if isinstance(m, str):
            proto.send_text(m.encode())
        else:
            proto.send_binary(m)
        for data in proto.data_to_send():
            size += len(data)
    return size


# -- wsproto ------------------------------------------------------------------

def wsproto_receive(reads: List[bytes]) -> List[Message]:
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage, TextMessage
    conn = Connection(ConnectionType.SERVER)
    out: List[Message] = []
    parts: list = []
    for data in reads:
        conn.receive_data(data)
        for event in conn.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                if event.message_finished and not parts:
                    out.append(event.data)
                    continue
                parts.append(event.data)
                if event.message_finished:
                    out.append(("" if isinstance(event, TextMessage) else b"").join(parts))
                    parts = []
    return out


def wsproto_send(messages: List[Message]) -> int:
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage, TextMessage
    conn = Connection(ConnectionType.SERVER)
    size = 0
    for m in messages:
        event = TextMessage(data=m) if isinstance(m, str) else BytesMessage(data=m)
        size += len(conn.send(event))
    return size


LIBRARIES: Dict[str, Tuple[Callable, Callable]] = {
    "websockets": (websockets_receive, websockets_send),
    "wsproto": (wsproto_receive, wsproto_send),
}


def available() -> Dict[str, Tuple[Callable, Callable]]:
    found = {}
    for name, funcs in LIBRARIES.items():
        try:
            __import__(name)
        except ImportError:
            print(f"{name}: not installed, left out")
            continue
        found[name] = funcs
    return found


def best(func: Callable, arg: object, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        func(arg)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="messages per workload")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    libs = available()
    small = json.dumps({"op": "tick", "seq": 1})                 # 23 bytes of text
    workloads: Dict[str, List[Message]] = {
        f"small text ({len(small)} B)": [small] * args.count,
        "binary 1 KiB": [os.urandom(1024)] * args.count,
    }
    versions = ", ".join(f"{n} {__import__(n).__version__}" for n in libs)
    print(f"{args.count} messages a workload, best of {args.rounds} ({versions})")
    print(f"{'workload':<34}" + "".join(f"{n + ' us/msg':>18}" for n in libs)
          + ("   wsproto/websockets" if len(libs) == 2 else ""))
    for label, messages in workloads.items():
        reads = stream(messages)
        for direction, index, arg in (("receive", 0, reads), ("send", 1, messages)):
            cost = {}
            for name, funcs in libs.items():
                if index == 0:        # every library decodes the same messages
                    assert funcs[0](reads) == messages, name
                cost[name] = best(funcs[index], arg, args.rounds) / len(messages) * 1e6
            row = f"{direction + ' ' + label:<34}" + "".join(f"{c:>18.3f}" for c in cost.values())
            if len(cost) == 2:
                row += f"   {cost['wsproto'] / cost['websockets']:>8.2f}x"
            print(row)


if __name__ == "__main__":
    main()
