"""Presence: which gateway nodes hold a user's sessions, and whether they are online.

The ``presence`` table value is ``{node_id: last_seen}`` (epoch seconds). A
node that stops sending heartbeats (it crashed) ages out after the TTL, so a
dead gateway does not keep its users "online" forever.
"""

from __future__ import annotations

from typing import Mapping

#: A session not heard from for this long is considered gone.
PRESENCE_TTL_SECONDS = 90.0


def apply_presence(state: Mapping[str, float] | None, node_id: str, event: str,
                   at: float, now: float, ttl: float = PRESENCE_TTL_SECONDS) -> dict[str, float]:
    """The presence value after ``event`` from ``node_id``; stale nodes are pruned."""
    nodes = {node: seen for node, seen in (state or {}).items() if now - seen < ttl}
    if event == "disconnect":
        nodes.pop(node_id, None)
    else:
        nodes[node_id] = max(at, nodes.get(node_id, 0.0))
    return nodes


def online_nodes(state: Mapping[str, float] | None, now: float,
                 ttl: float = PRESENCE_TTL_SECONDS) -> list[str]:
    """The nodes holding a live session of the user, most recent first."""
    live = [(seen, node) for node, seen in (state or {}).items() if now - seen < ttl]
    return [node for _, node in sorted(live, reverse=True)]
