"""The `streamer` program: the daemon (`serve`) and the client commands (prompt, cancel, status, record, timeline,
watch)."""
from __future__ import annotations

import sys

from clients.commands import add_client_commands
from streamer.cli import main as streamer_main


def main(argv=None) -> int:
    return streamer_main(argv, add_client_commands)


if __name__ == "__main__":
    sys.exit(main())
