"""Run the `baihua` command line and SIGKILL it just before its K-th file-system step.

    python tests/kill_at_step.py K FROM STEPS_LOG ROOT index reembed --data-dir ROOT ...

A step is an audited operation on a path under ROOT that changes files or opens a database (a
rename, a removal, a tree removal, a directory made, a file opened for writing, a SQLite
connection), or the look-up of a foreign file-system call (renameat2, called through ctypes
right after; Python audits no foreign call itself). Each step is appended to STEPS_LOG (number,
event, path) before it runs. Steps are counted from the first one whose "event<TAB>path"
matches the regular expression FROM ("" matches the first step; "A>>B": the first step matching B
after one matching A); at the K-th the process sends
itself SIGKILL, so that step does not run and nothing after it either: a crash at an exact
point of the program, with none of its code changed. K = 0 never kills (a run that lists its
steps); a FROM that never matches never kills.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Any

_FOREIGN_STEPS = {"renameat2", "renameat", "rename"}  # looked up (dlsym) just before the call
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
STEPS = {
    "os.rename",
    "os.replace",
    "os.remove",
    "os.rmdir",
    "os.mkdir",
    "os.truncate",
    "shutil.rmtree",
    "shutil.move",
    "sqlite3.connect",
}


def _path(args: tuple[Any, ...]) -> str:
    for arg in args:
        if isinstance(arg, (str, bytes, os.PathLike)):
            return os.fsdecode(arg)
    return ""


def _is_step(event: str, args: tuple[Any, ...]) -> bool:
    if event == "ctypes.dlsym":
        return len(args) > 1 and args[1] in _FOREIGN_STEPS
    if event in STEPS:
        return True
    if event != "open" or len(args) < 3:
        return False
    path, mode, flags = args[0], args[1], args[2]
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False  # a file descriptor
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def install(kill_at: int, start: list[re.Pattern[str]], log_fd: int, root: str) -> None:
    count = counted = matched = 0
    busy = False

    def hook(event: str, args: tuple[Any, ...]) -> None:
        nonlocal count, counted, matched, busy
        if busy or not _is_step(event, args):
            return
        path = _path(args)
        if event != "ctypes.dlsym" and not os.path.abspath(path).startswith(root + os.sep):
            return
        busy = True
        try:
            count += 1
            step = f"{event}\t{path}"
            os.write(log_fd, f"{count}\t{step}\n".encode())
            if matched < len(start) and start[matched].search(step):
                matched += 1
            if matched == len(start):
                counted += 1
            if counted == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            busy = False

    sys.addaudithook(hook)


def main() -> None:
    kill_at, log = int(sys.argv[1]), sys.argv[3]
    start = [re.compile(pattern) for pattern in sys.argv[2].split(">>")]
    root = os.path.abspath(sys.argv[4])
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    from baihua.cli.main import main as baihua

    install(kill_at, start, log_fd, root)
    sys.argv = ["baihua", *sys.argv[5:]]
    baihua()


if __name__ == "__main__":
    main()
