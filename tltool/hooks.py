"""A test facility: places where a test can stop the process at a precise moment.

`TLTOOL_PAUSE_AT=NAME[@EPOCH]` makes `pause_point(NAME)` print `paused at
NAME` on stderr and sleep for a minute, once, so a test can kill the run
there: while a checkpoint or the model is written (`checkpoint`, `export`),
while features are cached (`features`), in the middle of an epoch (`step`).
Reached at global epoch EPOCH or later. With the variable unset (every real
run), a call reads one environment variable and returns.
"""

from __future__ import annotations

import os
import sys
import time

_paused: set[str] = set()


def pause_point(name: str, epoch: int = 0) -> None:
    wanted = os.environ.get("TLTOOL_PAUSE_AT")
    if not wanted or name in _paused:
        return
    target, _, at = wanted.partition("@")
    if target == name and epoch >= int(at or 0):
        _paused.add(name)
        print(f"paused at {name}", file=sys.stderr, flush=True)
        time.sleep(60)
