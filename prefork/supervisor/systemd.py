"""systemd's notify protocol (sd_notify), without libsystemd.

A no-op unless the service manager set ``NOTIFY_SOCKET``: then each state
line (``READY=1``, ``RELOADING=1``, ``STOPPING=1``, ``STATUS=...``) is one
datagram to that unix socket.
"""

from __future__ import annotations

import os
import socket
import time


def notify(text: str) -> bool:
    """Send ``text`` to the service manager; True if there was one to tell."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if text.startswith("RELOADING=1"):
        # systemd >= 253 wants the reload's start time next to RELOADING=1.
        text += f"\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
    if address.startswith("@"):
        address = "\0" + address[1:]   # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(text.encode())
    except OSError:
        return False
    return True
