"""How the commands report a user error: one line on stderr and an exit code."""
from __future__ import annotations

import sys


def fail(message: str, code: int = 2) -> int:
    """Print ``mmcit: error: <message>`` to stderr and return ``code``."""
    print(f"mmcit: error: {message}", file=sys.stderr)
    return code
