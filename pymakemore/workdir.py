"""A run's work dir: one run at a time (a lock held for the run's life), checked writable
before the run starts, and a metrics.jsonl that reads as one run across resumes."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

try:
    import fcntl
except ImportError:  # not POSIX: no lock (two runs into one work dir are not refused there)
    fcntl = None

LOCK_NAME = ".lock"
# what an interrupted write leaves (a temp file is renamed into place once complete)
STALE_TEMPS = (".model.*.tmp", ".metrics.*.tmp")


def new_file_mode() -> int:
    """The mode a new file gets under this process's umask (tempfile's are 0600: a file
    renamed into place from one keeps the mode the user expects)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_cause(e: Exception, where: Path) -> str:
    """Why a write into the folder `where` failed, in a few words."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    try:  # torch's zip writer says "unexpected pos ..." when the disk fills up
        stats = os.statvfs(where)
        if stats.f_bavail * stats.f_frsize < 1 << 20:
            return "no space left on device"
    except OSError:
        pass
    return first_line(e)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def write_failure(path: Path, e: Exception) -> "WorkDirError":
    return WorkDirError(f"cannot write {path}: {write_cause(e, path.parent)}")


class WorkDirError(Exception):
    """A work dir that cannot take this run; the message is one line for the user."""


class RunLock:
    """An exclusive lock on work_dir/.lock for as long as the `with` lasts. The lock belongs to
    the open file, so the kernel drops it when the process ends however it ends: the .lock file
    a killed run leaves behind never blocks the next run."""

    def __init__(self, work_dir: Path):
        self.path = Path(work_dir) / LOCK_NAME
        self.fd: Optional[int] = None

    def __enter__(self) -> "RunLock":
        if fcntl is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise WorkDirError(f"another run (process {holder}) is using {self.path.parent}; "
                               f"wait for it to end or give another -o") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        # the lock is ours: what a killed run was writing is garbage now
        for pattern in STALE_TEMPS:
            for stale in self.path.parent.glob(pattern):
                stale.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None


def check_writable(work_dir: Path) -> None:
    """Fails now, in one line, where the run's first checkpoint would fail later."""
    try:
        with tempfile.TemporaryFile(dir=work_dir):
            pass
    except OSError as e:
        raise WorkDirError(f"cannot write in {work_dir}: {e.strerror or e}") from None


class Metrics:
    """metrics.jsonl, one JSON record a line. On a resume from step `resume_step`, the records
    a run logged after that step (it died before its next checkpoint) are dropped first, and so
    is the final record of a finished run (the one with test_loss), or its test loss alone where
    a longer run evaluates at that step anyway (`evaluates_there`): the file reads as one run,
    each step once, in order, as if the run had never stopped."""

    def __init__(self, path: Path, resume_step: Optional[int] = None,
                 evaluates_there: bool = False):
        if resume_step is not None and path.exists():
            keep = []
            for line in path.read_text(encoding="utf-8").splitlines():
                record = self._record(line)
                if record is None or record["step"] > resume_step:
                    continue
                if "test_loss" in record:
                    if not evaluates_there:
                        continue
                    del record["test_loss"]
                    line = json.dumps(record)
                keep.append(line)
            fd, tmp = tempfile.mkstemp(prefix=".metrics.", suffix=".tmp", dir=path.parent)
            try:
                os.fchmod(fd, new_file_mode())
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write("".join(line + "\n" for line in keep))
                os.replace(tmp, path)
            except OSError as e:
                Path(tmp).unlink(missing_ok=True)
                raise write_failure(path, e) from None
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        self.path = path
        try:
            self.file = open(path, "a" if resume_step is not None else "w", encoding="utf-8")
        except OSError as e:
            raise write_failure(path, e) from None

    @staticmethod
    def _record(line: str) -> Optional[dict[str, Any]]:
        try:
            record = json.loads(line)
            return record if isinstance(record, dict) and isinstance(record.get("step"), int) \
                else None
        except ValueError:
            return None  # a line cut short by the crash

    def write(self, record: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:  # a full disk: the line names the file
            raise write_failure(self.path, e) from None

    def close(self) -> None:
        try:
            self.file.close()
        except OSError as e:
            raise write_failure(self.path, e) from None
