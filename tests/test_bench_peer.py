"""The Django peer's pure parts (bench/django_peer.py): why a peer command failed, in one line, and
whether the peer's answer is the one its measurement needs (the peer answers a session it did not
accept with zeros, which must not be measured as if it were the badge)."""

from __future__ import annotations

import pytest

from bench.django_peer import answers, reason


def test_the_reason_is_the_last_line_that_is_not_pip_noise() -> None:
    pip = (
        "WARNING: Location 'file:///opt/pypi/simple/django/' is ignored: it is neither a file nor a directory.\n"
        "ERROR: Could not find a version that satisfies the requirement django-notifications-hq==1.8.3\n"
        "ERROR: No matching distribution found for django-notifications-hq==1.8.3\n"
        "WARNING: Location 'file:///opt/pypi-more/simple/pip/' is ignored\n\n"
    )
    assert reason(pip) == "ERROR: No matching distribution found for django-notifications-hq==1.8.3"
    traceback = 'Traceback (most recent call last):\n  File "x.py"\nModuleNotFoundError: No module named distutils'
    assert reason(traceback) == "ModuleNotFoundError: No module named distutils"
    assert reason("") == reason("WARNING: only noise\n") == "no output"
    cut = reason("x" * 500, limit=20)
    assert len(cut) == 20
    assert cut.endswith("…")


@pytest.mark.parametrize(
    ("body", "expect", "ok"),
    [
        ({"unread_count": 1000}, {"unread_count": 1000}, True),
        ({"unread_count": 0}, {"unread_count": 1000}, False),  # not logged in
        ({"unread_count": 50000, "unread_list": [{}] * 12}, {"unread_list": 12, "unread_count": 50000}, True),
        ({"unread_count": 50000, "unread_list": [{}] * 10}, {"unread_list": 12, "unread_count": 50000}, False),
        ({"unread_count": 0, "unread_list": []}, {"unread_list": 12, "unread_count": 50000}, False),
        ({"all_count": 100000, "all_list": [{}] * 50}, {"all_list": 50, "all_count": 100000}, True),
        ({"unread_count": True}, {"unread_count": 1}, False),  # a bool is not a count
        ({}, {"unread_count": 0}, False),  # a missing member is not a zero
        ([], {"unread_count": 0}, False),
    ],
)
def test_an_answer_is_measured_only_when_it_holds_the_counts_and_items_expected(
    body: object, expect: dict[str, int], ok: bool
) -> None:
    assert answers(body, expect) is ok
