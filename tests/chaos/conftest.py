"""The chaos tests share the integration suite's helpers."""

from tests.integration.conftest import unique  # noqa: F401 - a fixture, found by name
