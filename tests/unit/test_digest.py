"""Digest windows: batching, the item cap, redeliveries, the summary and its id."""

import json
import uuid

import pytest

from rules.digest import (
    add_item,
    digest_id,
    is_digested,
    is_due,
    parse_digest_categories,
    summary,
)

T0 = 1_700_000_000.0
HOUR = 3600.0


def item(n: int, **fields):
    return {"id": f"n-{n}", "title": f"title {n}", "body": f"body {n}",
            "created_at": f"2026-01-10T10:{n:02d}:00+00:00", "data": {"n": n}, **fields}


def window_of(*numbers: int, now: float = T0, max_items: int = 50):
    state = None
    for n in numbers:
        state = add_item(state, item(n), now, HOUR, max_items=max_items)
    return state


# --- parse_digest_categories ------------------------------------------------

@pytest.mark.parametrize(("spec", "categories"), [
    ("marketing=3600,news=86400", {"marketing": 3600.0, "news": 86400.0}),
    (" marketing = 3600 , news=0.5 ", {"marketing": 3600.0, "news": 0.5}),
    ("marketing=3600,", {"marketing": 3600.0}),
    ("", {}),
    (" , ", {}),
])
def test_parse_digest_categories(spec, categories):
    assert parse_digest_categories(spec) == categories


@pytest.mark.parametrize(("spec", "bad_part", "reason"), [
    ("marketing", "marketing", "expected CATEGORY=SECONDS"),
    ("marketing=3600,news", "news", "expected CATEGORY=SECONDS"),
    ("marketing=hourly", "marketing=hourly", "'hourly' is not a positive number of seconds"),
    ("marketing=", "marketing=", "'' is not a positive number of seconds"),
    ("marketing=0", "marketing=0", "not a positive number"),
    ("marketing=-60", "marketing=-60", "not a positive number"),
    ("marketing=inf", "marketing=inf", "not a positive number"),
    ("marketing=nan", "marketing=nan", "not a positive number"),
    ("=60", "=60", "'' is not a category name"),
    ("mark eting=60", "mark eting=60", "is not a category name"),
    ("news=60,news=120", "news=120", "news is set twice"),
])
def test_a_bad_digest_setting_names_the_entry_at_fault(spec, bad_part, reason):
    with pytest.raises(ValueError) as raised:
        parse_digest_categories(spec)
    assert repr(bad_part) in str(raised.value)
    assert reason in str(raised.value)


# --- is_digested ------------------------------------------------------------

@pytest.mark.parametrize(("category", "priority", "digested"), [
    ("marketing", "low", True),
    ("marketing", "normal", False),
    ("marketing", "high", False),
    ("marketing", "critical", False),
    ("account", "low", False),     # not a digest category
])
def test_only_low_priority_of_digest_categories_is_digested(category, priority, digested):
    assert is_digested(category, priority, {"marketing": HOUR}) is digested


# --- add_item and is_due ----------------------------------------------------

def test_the_first_item_opens_a_window():
    state = add_item(None, item(1), T0, HOUR)
    assert state == {"window_end": T0 + HOUR, "dropped": 0, "items": [item(1)]}


def test_later_items_join_the_window_without_moving_its_end():
    # Given a window opened at T0
    state = add_item(None, item(1), T0, HOUR)
    # When more items arrive during it
    state = add_item(state, item(2), T0 + 100, HOUR)
    state = add_item(state, item(3), T0 + HOUR - 1, HOUR)
    # Then they are listed in arrival order and the window still ends an hour after T0
    assert [kept["id"] for kept in state["items"]] == ["n-1", "n-2", "n-3"]
    assert state["window_end"] == T0 + HOUR


def test_only_what_a_digest_shows_is_kept():
    state = add_item(None, {"id": "n-1", "title": "t", "user_id": "u-1", "channels": ["email"]},
                     T0, HOUR)
    assert state["items"] == [{"id": "n-1", "title": "t", "body": None, "created_at": None,
                               "data": {}}]


def test_a_redelivered_item_is_not_listed_twice():
    # Given a window holding n-1
    state = window_of(1, 2)
    # When Kafka redelivers n-1 after a crash
    again = add_item(state, item(1), T0 + 5, HOUR)
    # Then the window is unchanged
    assert again == state


@pytest.mark.parametrize(("added", "kept", "dropped"), [
    (2, ["n-1", "n-2"], 0),
    (3, ["n-1", "n-2", "n-3"], 0),          # exactly at the cap: nothing let go
    (4, ["n-2", "n-3", "n-4"], 1),          # over it: the oldest goes, counted
    (10, ["n-8", "n-9", "n-10"], 7),
])
def test_the_newest_items_are_kept_and_the_rest_counted(added, kept, dropped):
    state = window_of(*range(1, added + 1), max_items=3)
    assert [entry["id"] for entry in state["items"]] == kept
    assert state["dropped"] == dropped


def test_an_item_added_to_a_due_window_joins_it():
    # Given a window whose end has passed but which has not been flushed yet
    state = window_of(1)
    assert is_due(state, T0 + HOUR + 10)
    # When another item arrives, it is not lost and the end does not move
    state = add_item(state, item(2), T0 + HOUR + 10, HOUR)
    assert [entry["id"] for entry in state["items"]] == ["n-1", "n-2"]
    assert state["window_end"] == T0 + HOUR


def test_add_item_leaves_the_stored_value_alone():
    # Given a stored window, as the table may hand out its cached object
    state = window_of(1, 2, 3, max_items=3)
    before = json.loads(json.dumps(state))
    # When items are added and the result changed
    after = add_item(state, item(4), T0, HOUR, max_items=3)
    after["items"][0]["data"]["n"] = "changed"
    # Then the stored window is untouched
    assert state == before


def test_a_window_is_a_plain_json_value():
    state = window_of(1, 2)
    assert json.loads(json.dumps(state)) == state


def test_a_window_stored_before_dropped_existed_still_reads():
    state = add_item({"window_end": T0 + HOUR, "items": [item(1)]}, item(2), T0, HOUR,
                     max_items=1)
    assert state["dropped"] == 1
    assert summary({"window_end": T0 + HOUR, "items": [item(1)]})["count"] == 1


@pytest.mark.parametrize(("window", "max_items", "bad"), [
    (0.0, 50, "window"), (-1.0, 50, "window"), (float("inf"), 50, "window"),
    (HOUR, 0, "max_items"),
])
def test_add_item_refuses_a_bad_window_or_cap(window, max_items, bad):
    with pytest.raises(ValueError, match=bad):
        add_item(None, item(1), T0, window, max_items=max_items)


@pytest.mark.parametrize("bad_item", [{"title": "no id"}, {"id": ""}, {"id": None}])
def test_an_item_without_an_id_is_refused(bad_item):
    with pytest.raises(ValueError, match="needs an id"):
        add_item(None, bad_item, T0, HOUR)


@pytest.mark.parametrize(("now", "due"), [
    (T0, False), (T0 + HOUR - 0.001, False), (T0 + HOUR, True), (T0 + 2 * HOUR, True),
])
def test_a_window_is_due_from_its_end_on(now, due):
    assert is_due(window_of(1), now) is due


# --- summary and digest_id --------------------------------------------------

def test_the_summary_counts_every_item_and_lists_the_kept_ones():
    # Given a window of five items capped at three
    state = window_of(1, 2, 3, 4, 5, max_items=3)
    # When it is summarised
    data = summary(state)
    # Then all five are counted and the newest three listed, oldest first
    assert data["count"] == 5
    assert data["dropped"] == 2
    assert data["items"] == [item(3), item(4), item(5)]


def test_a_summary_does_not_share_the_windows_items():
    state = window_of(1)
    summary(state)["items"][0]["data"]["n"] = "changed"
    assert state["items"][0]["data"] == {"n": 1}


def test_the_digest_id_is_the_same_on_replay():
    assert digest_id("u-1", "marketing", T0 + HOUR) == digest_id("u-1", "marketing", T0 + HOUR)
    # a window end read back from JSON as an integer is the same window
    assert digest_id("u-1", "marketing", 1_700_003_600) == digest_id("u-1", "marketing",
                                                                     1_700_003_600.0)
    assert uuid.UUID(digest_id("u-1", "marketing", T0)).version == 5


@pytest.mark.parametrize("other", [("u-2", "marketing", T0), ("u-1", "news", T0),
                                   ("u-1", "marketing", T0 + 1),
                                   # the parts cannot run into each other
                                   ("u-1m", "arketing", T0)])
def test_digest_ids_of_different_windows_differ(other):
    assert digest_id("u-1", "marketing", T0) != digest_id(*other)


def test_the_digest_id_is_pinned():
    # A new derivation would give a digest replayed across a deploy a new id,
    # and it would no longer be recognised as the one already sent.
    assert digest_id("u-1", "marketing", 1_700_003_600.0) == "38d516e4-d736-57d6-a997-d2c2e8902e4c"
