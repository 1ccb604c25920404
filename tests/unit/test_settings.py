"""Settings fail at start-up naming the variable at fault."""

from pathlib import Path

import pytest

from app.settings import Settings, SettingsError, redact

REQUIRED = {"HERALD_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
            "HERALD_DATABASE_URL": "postgresql://herald:secret@127.0.0.1:5432/herald"}


def test_defaults_fill_everything_optional():
    settings = Settings.from_env(REQUIRED)
    assert settings.partitions == 8
    assert settings.web_bind == "127.0.0.1"
    assert settings.data_dir == Path(".local/data/worker")
    assert settings.broker_url == "kafka://127.0.0.1:9092"


def test_values_come_from_the_environment():
    settings = Settings.from_env({**REQUIRED, "HERALD_PARTITIONS": "12", "HERALD_STORE": "memory",
                                  "HERALD_KAFKA_BOOTSTRAP": "k1:9092, k2:9093"})
    assert (settings.partitions, settings.store) == (12, "memory")
    assert settings.broker_url == "kafka://k1:9092;kafka://k2:9093"


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_a_missing_required_setting_names_its_variable(missing):
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(SettingsError, match=f"^{missing} is required"):
        Settings.from_env(env)


@pytest.mark.parametrize(("variable", "value"), [
    ("HERALD_PARTITIONS", "eight"), ("HERALD_PARTITIONS", "0"), ("HERALD_WEB_PORT", "70000"),
    ("HERALD_KAFKA_BOOTSTRAP", "localhost"), ("HERALD_DATABASE_URL", "mysql://x"),
    ("HERALD_STORE", "redis"), ("HERALD_DEDUP_WINDOW_SECONDS", "-1"),
])
def test_a_malformed_setting_names_its_variable_and_value(variable, value):
    with pytest.raises(SettingsError, match=f"^{variable}='{value}' is invalid"):
        Settings.from_env({**REQUIRED, variable: value})


def test_settings_are_frozen():
    settings = Settings.from_env(REQUIRED)
    with pytest.raises(AttributeError):
        settings.partitions = 3  # type: ignore[misc]


def test_redact_hides_the_password():
    assert redact(REQUIRED["HERALD_DATABASE_URL"]) == "postgresql://herald:***@127.0.0.1:5432/herald"
    assert redact("postgresql://127.0.0.1/db") == "postgresql://127.0.0.1/db"


def test_api_credentials_are_off_by_default():
    settings = Settings.from_env(REQUIRED)
    assert (settings.api_keys, settings.jwt_secret, settings.jwt_public_key) == ((), None, None)
    assert settings.max_body_bytes == 65536


def test_api_credentials_come_from_the_environment():
    settings = Settings.from_env({**REQUIRED, "HERALD_API_KEYS": "svc-a:K1:ingest,admin",
                                  "HERALD_JWT_SECRET": "s" * 32, "HERALD_JWT_AUDIENCE": "herald",
                                  "HERALD_MAX_BODY_BYTES": "1024"})
    assert [(key.name, sorted(key.scopes)) for key in settings.api_keys] == [
        ("svc-a", ["admin", "ingest"])]
    assert (settings.jwt_secret, settings.jwt_audience, settings.max_body_bytes) == (
        "s" * 32, "herald", 1024)
    assert "s" * 32 not in repr(settings).replace(repr(dict(settings.provider_env)), "")


@pytest.mark.parametrize(("variable", "value"), [
    ("HERALD_API_KEYS", "svc-a:K1"), ("HERALD_API_KEYS", "svc-a:K1:root"),
    ("HERALD_JWT_SECRET", "short"), ("HERALD_JWT_PUBLIC_KEY", "/no/such/key.pem"),
    ("HERALD_MAX_BODY_BYTES", "0"),
])
def test_malformed_api_settings_name_their_variable(variable, value):
    with pytest.raises(SettingsError, match=f"^{variable}='{value}' is invalid"):
        Settings.from_env({**REQUIRED, variable: value})


@pytest.mark.parametrize("bind, mode, needed", [
    ("127.0.0.1", "auto", False), ("::1", "auto", False), ("0.0.0.0", "auto", True),
    ("10.0.0.5", "auto", True), ("127.0.0.1", "admin", True), ("0.0.0.0", "open", False),
])
def test_table_views_need_an_admin_key_unless_only_this_host_can_reach_them(bind, mode, needed):
    env = {"HERALD_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
           "HERALD_DATABASE_URL": "postgresql://x@127.0.0.1/x",
           "HERALD_WEB_BIND": bind, "HERALD_TABLES_AUTH": mode}
    assert Settings.from_env(env).tables_need_admin is needed


def test_an_unknown_tables_auth_mode_fails_naming_the_variable():
    env = {"HERALD_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
           "HERALD_DATABASE_URL": "postgresql://x@127.0.0.1/x", "HERALD_TABLES_AUTH": "maybe"}
    with pytest.raises(SettingsError, match="HERALD_TABLES_AUTH"):
        Settings.from_env(env)


def test_the_hot_path_is_aiokafka_under_at_least_once_and_faust_under_exactly_once():
    assert Settings.from_env(REQUIRED).hot_path == "aiokafka"
    exactly = Settings.from_env({**REQUIRED, "HERALD_PROCESSING_GUARANTEE": "exactly_once"})
    assert exactly.hot_path == "faust"
    chosen = Settings.from_env({**REQUIRED, "HERALD_HOT_PATH": "faust"})
    assert chosen.hot_path == "faust"


def test_the_aiokafka_hot_path_under_exactly_once_is_refused_naming_both_variables():
    env = {**REQUIRED, "HERALD_PROCESSING_GUARANTEE": "exactly_once", "HERALD_HOT_PATH": "aiokafka"}
    with pytest.raises(SettingsError, match="HERALD_HOT_PATH=aiokafka needs "
                                            "HERALD_PROCESSING_GUARANTEE=at_least_once"):
        Settings.from_env(env)


def test_an_unknown_hot_path_names_its_variable():
    with pytest.raises(SettingsError, match="^HERALD_HOT_PATH='streams' is invalid"):
        Settings.from_env({**REQUIRED, "HERALD_HOT_PATH": "streams"})
