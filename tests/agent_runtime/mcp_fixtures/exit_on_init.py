"""An MCP "server" that reads the client's first message (initialize or server/discover), then exits 1."""

import sys

sys.stdin.readline()
sys.stderr.write("exit_on_init: giving up during initialisation\n")
sys.exit(1)
