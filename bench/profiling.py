"""Reading a py-spy profile (``--format raw``: collapsed stacks) into the top costs."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")
#: Leaf frames that mean the event loop was waiting, not working.
IDLE = ("Selector.select (selectors.py)",)


def frame_name(frame: str) -> str:
    """``"send (aiokafka/producer/producer.py:123)"`` → ``"send (aiokafka/producer/producer.py)"``."""
    frame = _LINE.sub(")", frame.strip())
    name, _, where = frame.partition(" (")
    parts = where.rstrip(")").split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if where else name


def top_frames(path: Path, limit: int = 25) -> dict[str, Any]:
    """Samples per function: where the time is spent (self) and under what (inclusive)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [frame_name(f) for f in stack.split(";")
                  if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += samples
        own[frames[-1]] += samples
        for name in set(frames):
            inclusive[name] += samples
    idle = sum(n for name, n in own.items() if name.endswith(IDLE))

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": name, "percent": round(100 * n / total, 1)}
                for name, n in counter.most_common(limit)]

    return {"samples": total, "idle_percent": round(100 * idle / total, 1) if total else None,
            "self": share(own), "inclusive": share(inclusive)}
