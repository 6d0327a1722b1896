import subprocess
import sys

import pytest

from service.errors import SettingsError
from service.settings import Settings, load_settings


def test_defaults_match_the_contract() -> None:
    s = load_settings({})
    assert (s.host, s.port, s.poll_interval, s.public_url) == ("127.0.0.1", 8000, 30, "")
    assert s.profiles == (("qualytics", "/api"), ("scalebox", "/v1"), ("aptly", "/aptly/v1"))
    assert s.database_url is None and s.redis_url is None


def test_values_are_read_from_the_environment() -> None:
    s = load_settings(
        {
            "HERALD_DATABASE_URL": "postgresql://u@db:5432/h",
            "HERALD_REDIS_URL": "redis://r:6379/2",
            "HERALD_HOST": "0.0.0.0",
            "HERALD_PORT": "9000",
            "HERALD_PUBLIC_URL": "https://app.example/",
            "HERALD_PROFILES": "scalebox=/sb, qualytics=/q/api",
            "HERALD_POLL_INTERVAL": "5",
        }
    )
    assert s.database_url == "postgresql://u@db:5432/h" and s.redis_url == "redis://r:6379/2"
    assert (s.host, s.port, s.poll_interval) == ("0.0.0.0", 9000, 5)
    assert s.public_url == "https://app.example"
    assert s.profiles == (("scalebox", "/sb"), ("qualytics", "/q/api"))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HERALD_PORT", "eighty"),
        ("HERALD_PORT", "70000"),
        ("HERALD_POLL_INTERVAL", "0"),
        ("HERALD_DATABASE_URL", "mysql://x"),
        ("HERALD_REDIS_URL", "http://x"),
        ("HERALD_PUBLIC_URL", "ftp://x"),
        ("HERALD_PROFILES", "gmail=/g"),
        ("HERALD_PROFILES", "qualytics=api"),
        ("HERALD_PROFILES", "qualytics=/a,qualytics=/b"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})
    assert caught.value.message.startswith(name + ":")
    assert "\n" not in caught.value.message


def test_parts_that_need_backends_refuse_to_start_without_them() -> None:
    with pytest.raises(SettingsError, match="HERALD_DATABASE_URL"):
        Settings().require_backends()


def test_cli_stops_with_one_line_naming_the_variable() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate"],
        env={"HERALD_PORT": "x", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["herald: HERALD_PORT: expected an integer, got 'x'"]
