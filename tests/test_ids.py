import random
import re

import pytest

from service import ids


@pytest.mark.parametrize("row_id", [1, 2, 42, 10**9, 2**53, 2**63 - 1])
def test_every_form_round_trips(row_id: int) -> None:
    assert ids.from_int(str(row_id)) == row_id
    assert ids.from_scalebox(ids.to_scalebox(row_id)) == row_id
    assert ids.from_uuid(ids.to_uuid(row_id)) == row_id


def test_scalebox_ids_have_the_documented_shape_and_do_not_read_as_a_counter() -> None:
    forms = [ids.to_scalebox(i) for i in range(1, 200)]
    assert all(re.fullmatch(r"ntf-[0-9a-z]{15}", f) for f in forms)
    assert len({f[4:10] for f in forms}) > 150


def test_aptly_ids_are_uuids() -> None:
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", ids.to_uuid(7))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ntf-",
        "ntf-abc123def456789",
        "ntf-ABC123DEF456789",
        "ntf-zzzzzzzzzzzzzzz",
        "xyz-abc123def456789",
        "ntf-" + "0" * 16,
    ],
)
def test_malformed_or_invented_scalebox_ids_decode_to_nothing(text: str) -> None:
    assert ids.from_scalebox(text) is None


@pytest.mark.parametrize(
    "text", ["", "42", "not-a-uuid", "550e8400-e29b-41d4-a716-446655440002", "00000000-0000-0000-0000-000000000000"]
)
def test_foreign_uuids_decode_to_nothing(text: str) -> None:
    assert ids.from_uuid(text) is None


@pytest.mark.parametrize("text", ["0", "-3", "abc", "1.5", str(2**63), ""])
def test_integers_outside_the_id_range_decode_to_nothing(text: str) -> None:
    assert ids.from_int(text) is None


def test_random_scalebox_lookalikes_are_almost_all_refused() -> None:
    rng = random.Random(7)
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    accepted = sum(
        ids.from_scalebox("ntf-" + "".join(rng.choice(alphabet) for _ in range(15))) is not None for _ in range(5000)
    )
    assert accepted < 20
