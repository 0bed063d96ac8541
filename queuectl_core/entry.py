"""The ``queuectl`` executable: `queuectl enqueue` in its common forms without click or plugin
discovery (queuectl_core.fast_enqueue), everything else through the click CLI. ``main`` ends the
process (an enqueue may end it without the interpreter's teardown: fast_enqueue._exit_now)."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        if len(sys.argv) > 1 and sys.argv[1] == "enqueue":
            if sys.version_info < (3, 12):  # 3.12's dataclasses call inspect for every class
                from queuectl_core.deferred_import import defer

                defer("inspect")  # ~4 ms that the enqueue never uses (see deferred_import)
            from queuectl_core.fast_enqueue import run

            status = run(sys.argv[1:], exit_now=True)
            if status is not None:
                sys.exit(status)
    except KeyboardInterrupt:  # as click: a blank line, "Aborted!", status 1
        sys.stderr.write("\nAborted!\n")
        sys.exit(1)
    from queuectl_core.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
