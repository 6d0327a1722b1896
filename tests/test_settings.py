import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.auth.signed import Verifier
from service.errors import SettingsError
from service.settings import Settings, load_settings


def test_defaults_match_the_contract() -> None:
    s = load_settings({})
    assert (s.host, s.port, s.poll_interval, s.public_url) == ("127.0.0.1", 8000, 30, "")
    assert s.profiles == (("qualytics", "/api"), ("scalebox", "/v1"), ("aptly", "/aptly/v1"))
    assert s.database_url is None and s.redis_url is None
    assert s.stream_limit == 10_000 and load_settings({"HERALD_STREAM_LIMIT": "5"}).stream_limit == 5


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
        ("HERALD_STREAM_LIMIT", "many"),
        ("HERALD_STREAM_LIMIT", "0"),
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


def _public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_signed_token_keys_are_read_and_checked(tmp_path: Path) -> None:
    assert load_settings({}).jwt_secret is None and load_settings({}).jwt_public_key is None
    secret = "s" * 32
    assert load_settings({"HERALD_JWT_SECRET": secret}).jwt_secret == secret
    for algorithm, key in [
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
    ]:
        path = tmp_path / f"{algorithm}.pem"
        path.write_bytes(_public_pem(key))
        s = load_settings(
            {"HERALD_JWT_PUBLIC_KEY_FILE": str(path), "HERALD_JWT_SECRET": secret, "HERALD_JWT_AUDIENCE": "herald"}
        )
        assert s.jwt_public_key == _public_pem(key).decode()
        assert s.jwt_audience == "herald"
        assert Verifier(s.jwt_secret, s.jwt_public_key).algorithms == ("HS256", algorithm)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("HERALD_JWT_SECRET", "too short"),
        ("HERALD_JWT_PUBLIC_KEY_FILE", None),  # no such file
        ("HERALD_JWT_PUBLIC_KEY_FILE", b"not a key"),
        ("HERALD_JWT_PUBLIC_KEY_FILE", b"\xff\xfe binary"),
        ("HERALD_JWT_PUBLIC_KEY_FILE", "small RSA"),
        ("HERALD_JWT_PUBLIC_KEY_FILE", "P-384"),
        ("HERALD_JWT_PUBLIC_KEY_FILE", "private key"),
    ],
)
def test_a_bad_signed_token_key_names_its_variable(tmp_path: Path, name: str, content: str | bytes | None) -> None:
    path = tmp_path / "key.pem"
    if content == "small RSA":
        path.write_bytes(_public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))  # noqa: S505 - the point
    elif content == "P-384":
        path.write_bytes(_public_pem(ec.generate_private_key(ec.SECP384R1())))
    elif content == "private key":
        private = ec.generate_private_key(ec.SECP256R1())
        path.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    elif isinstance(content, bytes):
        path.write_bytes(content)
    value = content if name == "HERALD_JWT_SECRET" else str(path)
    assert isinstance(value, str)
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})
    assert caught.value.message.startswith(name + ":")
    assert "\n" not in caught.value.message
