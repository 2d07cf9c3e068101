"""--reload: watch the application's files and ask for a reload when one changes.

The master does not import the application, so the workers tell it what to
watch: each writes the source files of its modules to a file of its own in
a directory the master made (:meth:`prefork.reports.ReportPipe.report_modules`).
The master adds those files, and the files matching ``reload_extra_file``,
to the watched set, and turns a change into ``ReloadWanted("file changed:
PATH")``: the same path as a HUP, so the arbiter decides, and a new
generation that fails to boot (a syntax error) leaves the old one serving.

Changes are seen by watchfiles when it is importable (in a thread that only
queues what it saw and writes a byte to a pipe the master selects on), else
by comparing the files' stat once a second from the master loop.
PREFORK_RELOAD_POLL=1 forces polling (tests, troubleshooting).  Several
saves within DEBOUNCE seconds make one reload.
"""

from __future__ import annotations

import collections
import glob
import logging
import os
import shutil
import tempfile
import threading
import time
from typing import Deque, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from ..config import Config
from ..reports import ReportPipe
from .events import ReloadWanted

logger = logging.getLogger("prefork")

DEBOUNCE = 0.3      # seconds of quiet after a change before the reload
POLL = 1.0          # seconds between two looks at the files, when polling
REPORTS = 0.25      # seconds between two looks at the workers' reports

Stamp = Tuple[int, int, int]     # mtime_ns, size, inode; (0, 0, 0) when missing


def stamp(path: str) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0, 0)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def glob_root(pattern: str) -> str:
    """The directory a glob pattern's matches are under: its part before any magic."""
    parts: List[str] = []
    for part in pattern.split(os.sep):
        if glob.has_magic(part):
            break
        parts.append(part)
    else:
        parts = parts[:-1]      # no magic: the file's own directory
    return os.sep.join(parts) or (os.sep if pattern.startswith(os.sep) else ".")


class Debouncer:
    """Changes in; one path out once DEBOUNCE seconds passed without another."""

    def __init__(self, quiet: float = DEBOUNCE) -> None:
        self.quiet = quiet
        self.first: Optional[str] = None
        self.last_at: Optional[float] = None

    def saw(self, path: str, now: float) -> None:
        if self.first is None:
            self.first = path
        self.last_at = now

    def deadline(self) -> Optional[float]:
        return None if self.last_at is None else self.last_at + self.quiet

    def due(self, now: float) -> Optional[str]:
        at = self.deadline()
        if at is None or now < at:
            return None
        path, self.first, self.last_at = self.first, None, None
        return path


class Reloader:
    """The master's watcher; with reload off every method does nothing."""

    def __init__(self, config: Config, reports: ReportPipe) -> None:
        self.enabled = config.reload
        self.patterns = tuple(os.path.abspath(p) for p in config.reload_extra_file)
        self.stamps: Dict[str, Stamp] = {}      # every watched file, as last seen
        self.debounce = Debouncer()
        self.next_poll = self.next_reports = 0.0
        self.directory = ""
        self.watcher: Optional[Watcher] = None
        if not self.enabled:
            return
        self.directory = reports.modules_dir = tempfile.mkdtemp(prefix="prefork-reload-")
        self._add(self._globbed())
        if os.environ.get("PREFORK_RELOAD_POLL", "") not in ("", "0"):
            how = "polling (PREFORK_RELOAD_POLL)"
        else:
            self.watcher = Watcher.start()
            if self.watcher is not None:
                self.watcher.watch(self._directories())
            how = "watchfiles" if self.watcher else "polling (watchfiles is not installed)"
        logger.info("reload: watching the workers' modules%s with %s",
                    " and " + ", ".join(config.reload_extra_file)
                    if self.patterns else "", how)

    def waiting(self) -> List[object]:
        return [self.watcher] if self.watcher is not None else []

    def next_deadline(self) -> Optional[float]:
        if not self.enabled:
            return None
        times = [self.next_reports, self.debounce.deadline()]
        if self.watcher is None:
            times.append(self.next_poll)
        return min(t for t in times if t is not None)

    def events(self, readable: Sequence[object], now: Optional[float] = None) -> List[object]:
        """What the master feeds: a ReloadWanted once a change has settled."""
        if not self.enabled:
            return []
        now = time.monotonic() if now is None else now
        if now >= self.next_reports:
            self.next_reports = now + REPORTS
            self._add(self._reported())
        if self.watcher is not None:
            if self.watcher in readable:
                self._look(self.watcher.take(), now)
        elif now >= self.next_poll:
            self._look(list(self.stamps) + self._globbed(), now)
            # While a change settles, look often: a burst of saves makes one reload.
            settling = self.debounce.deadline() is not None
            self.next_poll = now + (DEBOUNCE / 3 if settling else POLL)
        path = self.debounce.due(now)
        return [] if path is None else [ReloadWanted(f"file changed: {path}")]

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = ""

    # -- the watched set ------------------------------------------------------------

    def _look(self, paths: Iterable[str], now: float) -> None:
        """Re-stamp ``paths`` that are watched (or match a pattern); note what changed."""
        matching = set(self._globbed())
        for path in sorted(set(paths)):
            if path not in self.stamps and path not in matching:
                continue
            new = stamp(path)
            if self.stamps.get(path) != new:
                self.stamps[path] = new
                self.debounce.saw(path, now)

    def _add(self, paths: Iterable[str]) -> None:
        fresh = [p for p in paths if p not in self.stamps]
        for path in fresh:
            self.stamps[path] = stamp(path)
        if fresh and self.watcher is not None:
            self.watcher.watch(self._directories())

    def _directories(self) -> Set[str]:
        dirs = {os.path.dirname(p) for p in self.stamps}
        return dirs | {os.path.abspath(glob_root(p)) for p in self.patterns}

    def _globbed(self) -> List[str]:
        found: List[str] = []
        for pattern in self.patterns:
            found += [p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
        return found

    def _reported(self) -> List[str]:
        """The files the workers reported since the last look (their reports removed)."""
        files: List[str] = []
        try:
            names = [n for n in os.listdir(self.directory) if not n.endswith(".tmp")]
        except OSError:
            return files
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                with open(path, encoding="utf-8") as f:
                    files += [line for line in f.read().splitlines() if line]
                os.unlink(path)
            except OSError:
                continue
        return files


class Watcher:
    """watchfiles in a thread: it queues the paths it saw and writes a byte, no more."""

    def __init__(self, watch_fn: object) -> None:
        self._watch = watch_fn
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._seen: Deque[str] = collections.deque()
        self._stop: Optional[threading.Event] = None
        self._dirs: Set[str] = set()

    @classmethod
    def start(cls) -> Optional["Watcher"]:
        try:
            from watchfiles import watch
        except ImportError:
            return None
        return cls(watch)

    def fileno(self) -> int:
        return self._read

    def watch(self, directories: Set[str]) -> None:
        """Watch ``directories`` (not their subdirectories) from now on: a new thread."""
        directories = {d for d in directories if os.path.isdir(d)}
        if directories == self._dirs:
            return
        self._dirs = directories
        if self._stop is not None:
            self._stop.set()
        self._stop = threading.Event()
        thread = threading.Thread(target=self._run, args=(sorted(directories), self._stop),
                                  name="prefork-reload", daemon=True)
        thread.start()

    def _run(self, directories: List[str], stop: threading.Event) -> None:
        try:
            for batch in self._watch(*directories, watch_filter=None, debounce=100,
                                     step=20, stop_event=stop, recursive=False,
                                     raise_interrupt=False):
                if stop.is_set():
                    return
                self._seen.extend(path for _, path in batch)
                try:
                    os.write(self._write, b"!")
                except (BlockingIOError, OSError):
                    pass    # the master has a byte to read already, or is closing
        except Exception:   # the thread must not die loudly; polling is not restarted
            logger.exception("reload: the file watcher failed")

    def take(self) -> List[str]:
        try:
            while os.read(self._read, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        seen: List[str] = []
        while self._seen:
            seen.append(self._seen.popleft())
        return seen

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        os.close(self._read)
        os.close(self._write)
