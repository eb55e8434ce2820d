#!/usr/bin/env python3
"""Runs a command as a child subreaper: orphaned processes (a detached container's shim, a daemonised
supervisor) are reparented here and reaped, even on hosts whose PID 1 never reaps (this CI's does not).
Exits with the command's exit status."""
import ctypes
import os
import sys

PR_SET_CHILD_SUBREAPER = 36
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit(f"reaper: prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
status = 1
while True:
    try:
        p, st = os.wait()
    except ChildProcessError:
        break
    except InterruptedError:
        continue
    if p == pid:
        status = os.waitstatus_to_exitcode(st)
        if status < 0:
            status = 128 - status
sys.exit(status)
