"""Run an MCP stdio server, but write a non-JSON line to stdout before it starts and before each of its lines.

    python garbage_wrapper.py <command> [args...]

The child shares this process's stdin (so it sees the client's messages and EOF directly); its stdout comes
through here, one line at a time, each preceded by "garbage".
"""

import signal
import subprocess
import sys


def main() -> int:
    out = sys.stdout.buffer
    out.write(b"garbage\n")
    out.flush()
    child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    try:
        for line in child.stdout:
            out.write(b"garbage\n" + line)
            out.flush()
    except (BrokenPipeError, OSError):
        child.terminate()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
