"""Presence: sessions per node, heartbeats, and dead gateways ageing out."""

from tables.presence import apply_presence, online_nodes


def test_connect_then_disconnect():
    state = apply_presence(None, "gw-1", "connect", at=100.0, now=100.0)
    assert online_nodes(state, now=101.0) == ["gw-1"]
    state = apply_presence(state, "gw-1", "disconnect", at=102.0, now=102.0)
    assert online_nodes(state, now=103.0) == []


def test_two_nodes_most_recent_first_and_one_leaving_keeps_the_other():
    state = apply_presence(None, "gw-1", "connect", at=100.0, now=100.0)
    state = apply_presence(state, "gw-2", "connect", at=105.0, now=105.0)
    assert online_nodes(state, now=106.0) == ["gw-2", "gw-1"]
    state = apply_presence(state, "gw-2", "disconnect", at=107.0, now=107.0)
    assert online_nodes(state, now=108.0) == ["gw-1"]


def test_a_silent_node_ages_out():
    # Given a node that connected and then crashed without disconnecting
    state = apply_presence(None, "gw-1", "connect", at=100.0, now=100.0)
    # Then it counts until the TTL, not after
    assert online_nodes(state, now=189.9, ttl=90) == ["gw-1"]
    assert online_nodes(state, now=190.0, ttl=90) == []
    # And it is pruned from the stored value on the next change
    assert "gw-1" not in apply_presence(state, "gw-2", "connect", at=200.0, now=200.0, ttl=90)


def test_a_late_heartbeat_does_not_move_last_seen_backwards():
    state = apply_presence(None, "gw-1", "heartbeat", at=200.0, now=200.0)
    state = apply_presence(state, "gw-1", "heartbeat", at=150.0, now=201.0)
    assert state["gw-1"] == 200.0
