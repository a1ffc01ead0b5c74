#!/usr/bin/env python3
"""in-pty.py COMMAND [ARGS...]: runs COMMAND on a new pseudo-terminal that
nobody types into, prints what it wrote there, and exits with its status.
(`kubectl exec -it` wants a terminal; script(1) would forward its own stdin,
and type a NUL into the terminal at the end of it.)"""
import os
import pty
import sys

pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
output = b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:  # EIO: the terminal's last user closed it
        break
    if not chunk:
        break
    output += chunk[: max(0, (1 << 20) - len(output))]
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(output)
sys.exit(os.waitstatus_to_exitcode(status))
