"""The one console every stage prints progress and summaries to (stderr, lines never wrapped)."""

from rich.console import Console

console = Console(stderr=True, soft_wrap=True)
