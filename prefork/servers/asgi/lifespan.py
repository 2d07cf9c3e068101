"""The ASGI lifespan protocol in one worker: startup before it is ready, shutdown when it stops.

The app's lifespan call runs as one task for the worker's whole life.
:meth:`Lifespan.startup` sends ``lifespan.startup`` and waits for the
answer; :meth:`Lifespan.shutdown` sends ``lifespan.shutdown`` after the
last request of a graceful stop, a reload or a recycle.

``mode`` (the ``lifespan`` setting): ``on``: anything but
``lifespan.startup.complete`` is a :class:`LifespanFailure`, which the
worker reports as a boot failure (exit status 3); ``auto``: the same for a
``lifespan.startup.failed`` the app sends, but an app that raises or
returns instead (one that does not speak lifespan) is served without it;
``off``: never called.  A startup that does not finish within ``timeout``
seconds fails too, so a hung startup cannot hold a reload forever.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Dict, Optional, Tuple

logger = logging.getLogger("prefork")

SCOPE_ASGI = {"version": "3.0", "spec_version": "2.0"}


class LifespanFailure(Exception):
    """The app's startup failed: the worker cannot serve."""


class Lifespan:
    """One app's lifespan in one worker; see the module docstring."""

    def __init__(self, app: Callable, mode: str, timeout: float) -> None:
        self.app = app
        self.mode = mode
        self.timeout = timeout
        self.state: Dict[str, Any] = {}     # the app fills it at startup; requests get copies
        self.running = False                # startup completed: shutdown is due
        self._task: Optional[asyncio.Task] = None
        self._inbox: Optional[asyncio.Queue] = None
        self._startup: Optional[asyncio.Future] = None
        self._shutdown: Optional[asyncio.Future] = None

    async def startup(self) -> None:
        if self.mode == "off":
            return
        loop = asyncio.get_running_loop()
        self._inbox = asyncio.Queue()
        self._startup, self._shutdown = loop.create_future(), loop.create_future()
        self._inbox.put_nowait({"type": "lifespan.startup"})
        self._task = loop.create_task(self._main())
        try:
            outcome, detail = await asyncio.wait_for(asyncio.shield(self._startup),
                                                     self.timeout)
        except asyncio.TimeoutError:
            self._task.cancel()
            raise LifespanFailure(f"ASGI lifespan startup did not complete within "
                                  f"{self.timeout:g} s") from None
        if outcome == "complete":
            self.running = True
            return
        if outcome == "failed":
            raise LifespanFailure(f"ASGI lifespan startup failed: {detail or 'no message'}")
        if self.mode == "on":
            raise LifespanFailure(f"ASGI lifespan startup: {detail}")
        logger.info("the app does not support the ASGI lifespan protocol (%s); serving "
                    "without it (--lifespan off says so)", detail)
        self.state = {}

    async def shutdown(self, timeout: float) -> None:
        if not self.running or self._task is None:
            return
        self.running = False
        self._inbox.put_nowait({"type": "lifespan.shutdown"})
        try:
            outcome, detail = await asyncio.wait_for(asyncio.shield(self._shutdown), timeout)
        except asyncio.TimeoutError:
            logger.error("ASGI lifespan shutdown did not complete within %.1f s", timeout)
            self._task.cancel()
            return
        if outcome == "failed":
            logger.error("ASGI lifespan shutdown failed: %s", detail or "no message")
        elif outcome != "complete":
            logger.error("ASGI lifespan shutdown: %s", detail)

    # -- the app's side -----------------------------------------------------------

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": SCOPE_ASGI, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if self._startup.done() and not self._shutdown.done():
                logger.exception("error in the ASGI app's lifespan")
            elif not self._startup.done() and self.mode == "on":
                logger.exception("error in the ASGI app's lifespan startup")
            self._settle(("error", f"the app raised {exc!r}"))
        else:
            self._settle(("error", "the app returned"))

    def _settle(self, outcome: Tuple[str, str]) -> None:
        for future in (self._startup, self._shutdown):
            if not future.done():
                future.set_result(outcome)

    async def _receive(self) -> Dict[str, Any]:
        return await self._inbox.get()

    async def _send(self, message: Dict[str, Any]) -> None:
        kind = message.get("type", "")
        if kind.startswith("lifespan.startup."):
            future = self._startup
        elif kind.startswith("lifespan.shutdown."):
            future = self._shutdown
        else:
            raise RuntimeError(f"unexpected lifespan message {kind!r}")
        outcome = kind.rsplit(".", 1)[1]
        if outcome not in ("complete", "failed") or future.done():
            raise RuntimeError(f"unexpected lifespan message {kind!r}")
        future.set_result((outcome, str(message.get("message", ""))))
