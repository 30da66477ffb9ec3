"""How control.client and `foundry usage` read times, and the CLI's sparkline (no network)."""

from __future__ import annotations

import doctest
from datetime import datetime, timedelta, timezone

import pytest

import control.cli.admin
import control.client
from control.client import resolve_time

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("2w", NOW - timedelta(weeks=2)),
        (timedelta(hours=2), NOW - timedelta(hours=2)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=timezone.utc)),
        ("2026-11-01T10:00:00Z", datetime(2026, 11, 1, 10, tzinfo=timezone.utc)),
        ("2026-11-01T12:00:00+02:00", datetime(2026, 11, 1, 10, tzinfo=timezone.utc)),
        (datetime(2026, 11, 1, 9), datetime(2026, 11, 1, 9, tzinfo=timezone.utc)),  # naive is UTC
    ],
)
def test_resolve_time(value, expected):
    assert resolve_time(value, now=NOW) == expected


def test_a_bad_time_says_what_is_accepted():
    with pytest.raises(ValueError, match="neither ISO 8601 nor a duration like 30m, 24h, 7d"):
        resolve_time("yesterday", now=NOW)


@pytest.mark.parametrize("module", [control.client, control.cli.admin])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
