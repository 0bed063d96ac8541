"""The ``queuectl`` executable: the click CLI."""

from __future__ import annotations

from queuectl_core.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
