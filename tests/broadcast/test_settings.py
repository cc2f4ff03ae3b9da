"""Settings: defaults, the TOML file, the environment over the file, and refusal of bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from broadcast.errors import InvalidInput
from broadcast.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run every test in an empty directory, so no stray ./broadcast.toml is read."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(directory: Path, body: str, name: str = "broadcast.toml") -> Path:
    path = directory / name
    path.write_text(body, encoding="utf-8")
    return path


def refused(environ: dict[str, str] | None = None, config_file: Path | None = None) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        load_settings(environ or {}, config_file)
    return caught.value


# ---------------------------------------------------------------- defaults


def test_defaults_without_file_or_environment() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.redis_url is None
    assert settings.local_redis_port == 6399
    assert settings.data_dir == Path(".broadcast")
    assert settings.workers == 2
    assert settings.languages == ("zh-CN", "en")
    assert settings.required_languages == ("zh-CN", "en")
    assert (settings.max_headline_length, settings.max_text_length) == (160, 4000)
    assert settings.max_body_bytes == 1_048_576
    assert settings.default_validity_hours == 6.0
    assert settings.rates["sms"] == 5000.0 and len(settings.rates) == 13
    assert settings.edge_coverage_fraction == 0.05
    assert settings.timezone == "Asia/Shanghai"
    assert settings.job_timeout_seconds == 600
    assert settings.base_url == "http://127.0.0.1:8080"


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.port = 9000  # type: ignore[misc]
    changed = settings.with_overrides(port=9000)
    assert (settings.port, changed.port) == (8080, 9000)


# ---------------------------------------------------------------- the file


def test_values_from_the_toml_file(empty_cwd: Path) -> None:
    path = write_config(empty_cwd, """
host = "0.0.0.0"
port = 9090
data_dir = "/var/lib/broadcast"
workers = 5
languages = ["zh-CN", "en", "fr"]
required_languages = ["zh-CN"]
default_validity_hours = 2.5
channel_rates = ["sms=4000", "voice=50.5"]
identifier_prefix = "TEST"
""")
    settings = load_settings({}, path)
    assert (settings.host, settings.port) == ("0.0.0.0", 9090)
    assert settings.data_dir == Path("/var/lib/broadcast")
    assert settings.workers == 5
    assert settings.languages == ("zh-CN", "en", "fr")
    assert settings.required_languages == ("zh-CN",)
    assert settings.default_validity_hours == 2.5
    assert settings.rates == {"sms": 4000.0, "voice": 50.5}
    assert settings.identifier_prefix == "TEST"
    assert settings.timezone == "Asia/Shanghai"  # untouched keys keep their default


def test_broadcast_toml_in_the_working_directory_is_read(empty_cwd: Path) -> None:
    write_config(empty_cwd, "port = 9191\n")
    assert load_settings({}).port == 9191


def test_broadcast_config_names_the_file(empty_cwd: Path) -> None:
    write_config(empty_cwd, "port = 9191\n")  # ignored: BROADCAST_CONFIG wins
    other = write_config(empty_cwd, "port = 9292\n", name="other.toml")
    assert load_settings({"BROADCAST_CONFIG": str(other)}).port == 9292


def test_a_named_config_file_that_is_missing_is_refused(empty_cwd: Path) -> None:
    err = refused({"BROADCAST_CONFIG": str(empty_cwd / "absent.toml")})
    assert err.field == "BROADCAST_CONFIG"


def test_a_config_file_that_is_not_toml_is_refused(empty_cwd: Path) -> None:
    err = refused(config_file=write_config(empty_cwd, "port = = 1\n"))
    assert err.field == "BROADCAST_CONFIG"


# ---------------------------------------------------------------- the environment


def test_environment_overrides_the_file(empty_cwd: Path) -> None:
    path = write_config(empty_cwd, 'port = 9090\nredis_url = "redis://file:6379/0"\nworkers = 3\n')
    settings = load_settings({"BROADCAST_PORT": "7070", "REDIS_URL": "redis://env:6379/2"}, path)
    assert settings.port == 7070
    assert settings.redis_url == "redis://env:6379/2"
    assert settings.workers == 3  # from the file: nothing in the environment


def test_broadcast_redis_url_is_not_the_name_of_the_redis_setting() -> None:
    assert load_settings({"BROADCAST_REDIS_URL": "redis://x:1/0"}).redis_url is None


def test_environment_lists_are_comma_separated() -> None:
    settings = load_settings({
        "BROADCAST_LANGUAGES": "zh-CN, en ,fr,",
        "BROADCAST_REQUIRED_LANGUAGES": "en",
        "BROADCAST_CHANNEL_RATES": "sms=100, email=2.5",
    })
    assert settings.languages == ("zh-CN", "en", "fr")
    assert settings.required_languages == ("en",)
    assert settings.rates == {"sms": 100.0, "email": 2.5}


def test_environment_numbers_and_paths_are_converted() -> None:
    settings = load_settings({
        "BROADCAST_WORKERS": "8",
        "BROADCAST_DEFAULT_VALIDITY_HOURS": "1.5",
        "BROADCAST_DATA_DIR": "/srv/bc",
    })
    assert settings.workers == 8
    assert settings.default_validity_hours == 1.5
    assert settings.data_dir == Path("/srv/bc")


# ---------------------------------------------------------------- refusals


def test_unknown_key_in_the_file_is_refused_naming_it(empty_cwd: Path) -> None:
    err = refused(config_file=write_config(empty_cwd, "port = 9090\nprot = 9091\n"))
    assert err.field == "prot"


def test_a_table_in_the_file_is_an_unknown_key(empty_cwd: Path) -> None:
    err = refused(config_file=write_config(empty_cwd, "[server]\nport = 9090\n"))
    assert err.field == "server"


def test_port_abc_in_the_environment_is_refused() -> None:
    err = refused({"BROADCAST_PORT": "abc"})
    assert err.field == "port"
    assert "abc" in err.message


def test_port_abc_in_the_file_is_refused(empty_cwd: Path) -> None:
    err = refused(config_file=write_config(empty_cwd, 'port = "abc"\n'))
    assert err.field == "port"


@pytest.mark.parametrize(("name", "value"), [
    ("port", "70000"), ("port", "0"), ("port", "-1"), ("local_redis_port", "70000"),
])
def test_ports_out_of_range_are_refused(name: str, value: str) -> None:
    err = refused({f"BROADCAST_{name.upper()}": value})
    assert err.field == name


def test_port_65535_is_accepted() -> None:
    assert load_settings({"BROADCAST_PORT": "65535"}).port == 65535


def test_port_70000_in_the_file_is_refused(empty_cwd: Path) -> None:
    err = refused(config_file=write_config(empty_cwd, "port = 70000\n"))
    assert err.field == "port"


def test_required_language_not_among_languages_is_refused(empty_cwd: Path) -> None:
    err = refused(config_file=write_config(empty_cwd, 'required_languages = ["zh-CN", "fr"]\n'))
    assert err.field == "languages"
    assert "fr" in err.message


def test_dropping_a_required_language_from_languages_is_refused() -> None:
    err = refused({"BROADCAST_LANGUAGES": "zh-CN"})
    assert err.field == "languages"
    assert "en" in err.message


@pytest.mark.parametrize("name", ["workers", "max_headline_length", "max_text_length", "max_body_bytes"])
def test_limits_must_be_positive(name: str) -> None:
    err = refused({f"BROADCAST_{name.upper()}": "0"})
    assert err.field == name


@pytest.mark.parametrize("rates", ["sms", "sms=fast", "sms=0", "=5", "sms=-3", "sms=inf"])
def test_channel_rates_need_positive_numbers(rates: str) -> None:
    err = refused({"BROADCAST_CHANNEL_RATES": rates})
    assert err.field == "channel_rates"


def test_a_list_where_a_number_belongs_is_refused(empty_cwd: Path) -> None:
    err = refused(config_file=write_config(empty_cwd, "workers = [1, 2]\n"))
    assert err.field == "workers"


def test_a_boolean_port_in_the_file_is_refused(empty_cwd: Path) -> None:
    err = refused(config_file=write_config(empty_cwd, "port = true\n"))
    assert err.field == "port"


def test_a_fractional_port_in_the_file_is_refused(empty_cwd: Path) -> None:
    err = refused(config_file=write_config(empty_cwd, "port = 8080.9\n"))
    assert err.field == "port"


def test_a_list_where_a_string_belongs_is_refused(empty_cwd: Path) -> None:
    err = refused(config_file=write_config(empty_cwd, 'host = ["a", "b"]\n'))
    assert err.field == "host"


def test_default_validity_hours_must_be_positive() -> None:
    err = refused({"BROADCAST_DEFAULT_VALIDITY_HOURS": "0"})
    assert err.field == "default_validity_hours"


def test_an_unknown_timezone_is_refused() -> None:
    err = refused({"BROADCAST_TIMEZONE": "Mars/Olympus_Mons"})
    assert err.field == "timezone"


# ---------------------------------------------------------------- effective_redis_url


def test_effective_redis_url_without_redis_url_is_the_own_server() -> None:
    assert load_settings({}).effective_redis_url == "redis://127.0.0.1:6399/0"
    assert load_settings({"BROADCAST_LOCAL_REDIS_PORT": "7001"}).effective_redis_url == "redis://127.0.0.1:7001/0"


def test_effective_redis_url_with_redis_url() -> None:
    settings = load_settings({"REDIS_URL": "redis://cache.internal:6380/3", "BROADCAST_LOCAL_REDIS_PORT": "7001"})
    assert settings.redis_url == "redis://cache.internal:6380/3"
    assert settings.effective_redis_url == "redis://cache.internal:6380/3"


def test_empty_redis_url_means_unset() -> None:
    settings = load_settings({"REDIS_URL": ""})
    assert settings.redis_url is None
    assert settings.effective_redis_url == "redis://127.0.0.1:6399/0"
