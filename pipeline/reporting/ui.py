"""The one console every stage prints progress, tables and summaries to (stderr, lines never wrapped)."""

import sys

from rich.console import Console

# Logs and CI (no terminal) get wide tables instead of rich's 80-column default.
console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)
