"""Tables read back the changelog records they write (raw user-id keys)."""

from __future__ import annotations

import faust
import pytest
from faust.types import Message

from app.settings import Settings
from tables.declarations import TABLE_NAMES, Tables


@pytest.mark.parametrize("name", TABLE_NAMES)
def test_a_changelog_record_with_a_raw_key_decodes_on_restore(name: str) -> None:
    # Given the tables declared on an app (no broker needed to declare them)
    app = faust.App("decl-test", broker="kafka://127.0.0.1:1", store="memory://",
                    key_serializer="raw", autodiscover=False)
    table = Tables.declare(app, Settings("127.0.0.1:1", "postgresql://x@y/z")).by_name()[name]
    # When a changelog record as the worker writes it (raw key) is read back
    message = Message(topic=table.changelog_topic.get_topic_name(), partition=0, offset=0,
                      timestamp=0.0, timestamp_type=0, headers=[], key=b"u-42",
                      value=b"{}", checksum=None)
    key = table.changelog_topic.schema.loads_key(app, message)
    # Then its key is the user id, as written
    assert key == "u-42"
    assert table.changelog_topic.key_serializer == "raw"
