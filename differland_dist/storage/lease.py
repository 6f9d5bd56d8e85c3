"""One writer at a time: a lease on a run directory or an output, with a heartbeat.

    with Lease(Location(run_dir, options), owner="calibrate", force=args.force) as lease:
        ...                 # lease.check() before each write raises LeaseLost if it was taken
                            # over meanwhile

The lease is one small JSON file (by default ``<location>/.differland-lease.json``) naming its
holder (owner, host, pid), a random token, and the time of its last heartbeat. A thread
rewrites it every ``heartbeat_s`` seconds. Another process that finds a lease refuses with an
error naming the holder and the age of its heartbeat. A lease is *stale* when its heartbeat is
older than ``stale_s``, or when its holder ran on this host and its process is gone; ``force``
takes over a stale lease (never a live one). Releasing deletes the file only if it still holds
our token.

Creating the file is exclusive where the storage allows it: ``os.link`` of a complete temporary
file locally, a create-only upload (GCS ``ifGenerationMatch=0``, S3 ``If-None-Match``) on object
stores. Every acquisition reads the lease back and checks its token, and every heartbeat checks
it again, so a writer whose lease was taken (a backend that ignores the precondition, or a
``force`` from elsewhere) finds out at its next :meth:`Lease.check`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from differland_dist.errors import DifferlandError, LeaseHeld, LeaseLost
from differland_dist.storage.location import Location

log = logging.getLogger(__name__)

#: The lease file's name inside the location it holds.
LEASE_FILE = ".differland-lease.json"
#: Seconds between heartbeats.
HEARTBEAT_S = 30.0
#: A lease whose heartbeat is older than this many seconds may be taken over with ``force``.
STALE_S = 300.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _ago(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


class Lease:
    """An exclusive, heartbeated hold on ``location`` (see the module docstring).

    Args:
      location: what is held (a run directory, an output store).
      owner: what holds it, for messages ("calibrate", "infer", ...).
      file: the lease file (default ``location/.differland-lease.json``); a sibling for
        targets that must stay free of foreign files.
      force: take over a stale lease.
      heartbeat_s, stale_s: heartbeat period and staleness timeout (s); ``stale_s`` is saved
        in the lease, so every reader judges it by its holder's setting.
    """

    def __init__(self, location: Location, owner: str, *, file: Location | None = None,
                 force: bool = False, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S):
        if not 0 < heartbeat_s < stale_s:
            raise ValueError(f"need 0 < heartbeat_s < stale_s, got {heartbeat_s}, {stale_s}")
        self.location = location
        self.file = file if file is not None else location.join(LEASE_FILE)
        self.owner = str(owner)
        self.force = bool(force)
        self.heartbeat_s = float(heartbeat_s)
        self.stale_s = float(stale_s)
        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started = 0.0
        self.lost: str | None = None
        self._last_ok = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = False

    # -- the file ----------------------------------------------------------------------------
    def _record(self) -> dict[str, Any]:
        return {"writer": "differland_dist", "owner": self.owner, "host": self.host,
                "pid": self.pid, "token": self.token, "started": self.started,
                "heartbeat": time.time(), "heartbeat_s": self.heartbeat_s, "stale_s": self.stale_s}

    def holder(self) -> dict[str, Any] | None:
        """The lease file's content; None if there is none; ``{}`` if it is unreadable."""
        self.file.invalidate()
        try:
            data = self.file.read_bytes()
        except FileNotFoundError:
            return None
        try:
            info = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return info if isinstance(info, dict) else {}

    def _create(self, data: bytes) -> bool:
        """Create the lease file only if there is none; False if one is there."""
        if self.file.local:
            parent = os.path.dirname(self.file.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            tmp = f"{self.file.path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.file.path)  # atomic and exclusive, with the content complete
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            return True
        if self.file.exists():
            return False
        try:
            self.file.fs.pipe_file(self.file.path, data, mode="create")
        except FileExistsError:
            return False
        except (TypeError, NotImplementedError):  # a filesystem without create-only uploads
            self.file.fs.pipe_file(self.file.path, data)
        return True

    def describe(self, info: dict[str, Any]) -> tuple[str, bool]:
        """(who holds it and how recently it beat, whether it is stale)."""
        if not info:
            return f"an unreadable lease file {self.file.url}", True
        age = time.time() - float(info.get("heartbeat") or 0.0)
        stale_s = float(info.get("stale_s") or self.stale_s)
        host, pid = info.get("host", "?"), info.get("pid", "?")
        gone = host == self.host and isinstance(pid, int) and not _pid_alive(pid)
        who = (f"{info.get('owner', 'differland')} on host {host} (pid {pid}"
               f"{', no longer running' if gone else ''}), last heartbeat {_ago(age)}")
        return who, gone or age > stale_s

    # -- acquire / renew / release -----------------------------------------------------------
    def acquire(self) -> "Lease":
        """Take the lease; LeaseHeld if another process holds it, DifferlandError if the
        location cannot be written."""
        self.started = time.time()
        data = json.dumps(self._record(), indent=1).encode()
        try:
            created = self._create(data)
            if not created:
                info = self.holder()
                if info is None:  # released meanwhile
                    created = self._create(data)
            if not created:
                who, stale = self.describe(info)
                stale_s = float((info or {}).get("stale_s") or self.stale_s)
                if not stale:
                    raise LeaseHeld(
                        f"{self.location.url} is in use by {who}; wait for it to finish or "
                        f"choose another location (--force takes over a lease only once its "
                        f"heartbeat is older than {stale_s:.0f} s)")
                if not self.force:
                    raise LeaseHeld(f"{self.location.url} is held by {who}, which looks dead "
                                    "(stale lease); pass --force to take it over")
                log.warning("%s: taking over the stale lease of %s", self.location.url, who)
                self.file.write_atomic(data)
        except DifferlandError:
            raise
        except Exception as e:  # noqa: BLE001 - unwritable: a folder that is a file, no permission
            detail = getattr(e, "strerror", None) or (str(e).splitlines() or [""])[0]
            raise DifferlandError(f"{self.location.url}: cannot write there "
                                  f"({type(e).__name__}: {detail})") from None
        mine = self.holder()
        if not mine or mine.get("token") != self.token:
            who = self.describe(mine or {})[0]
            raise LeaseHeld(f"{self.location.url}: another process took the lease at the same "
                            f"time ({who})")
        self._held = True
        self._last_ok = time.time()
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.owner}", daemon=True)
        self._thread.start()
        log.debug("lease on %s taken (%s)", self.location.url, self.file.url)
        return self

    def renew(self) -> None:
        """One heartbeat: check that the lease is still ours, then rewrite its time."""
        info = self.holder()
        if not info or info.get("token") != self.token:
            who = self.describe(info)[0] if info else "nobody (the lease file is gone)"
            self.lost = f"the lease is now held by {who}"
            return
        self.file.write_atomic(json.dumps(self._record(), indent=1).encode())
        self._last_ok = time.time()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.renew()
            except Exception as e:  # noqa: BLE001 - a transient storage error: retry next beat
                log.warning("%s: lease heartbeat failed (%s: %s)", self.location.url,
                            type(e).__name__, e)
                if time.time() - self._last_ok > self.stale_s:
                    self.lost = f"no heartbeat written for {time.time() - self._last_ok:.0f} s"
            if self.lost:
                log.error("%s: lease lost: %s", self.location.url, self.lost)
                return

    def check(self) -> None:
        """Raise LeaseLost if the lease was taken over or could not be renewed."""
        if self.lost:
            raise LeaseLost(f"{self.location.url}: lost the lease ({self.lost}); stopped so as "
                            "not to write over another run")

    def release(self) -> None:
        """Stop the heartbeat and delete the lease file if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        if not self._held:
            return
        self._held = False
        try:
            info = self.holder()
            if info and info.get("token") == self.token:
                self.file.remove()
        except Exception as e:  # noqa: BLE001 - never hide the error that ended the run
            log.warning("%s: could not release the lease %s (%s: %s)", self.location.url,
                        self.file.url, type(e).__name__, e)

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
