"""Database URLs as users write them, mapped to this stack's drivers."""

from __future__ import annotations

import pytest

from control.db import DatabaseURLError, parse_url


@pytest.mark.parametrize(
    ("given", "is_async", "driver"),
    [
        ("sqlite:///var/foundry.db", True, "sqlite+aiosqlite"),
        ("sqlite:///var/foundry.db", False, "sqlite+pysqlite"),
        ("sqlite+aiosqlite:///var/foundry.db", False, "sqlite+pysqlite"),
        ("sqlite+pysqlite:////abs/foundry.db", True, "sqlite+aiosqlite"),
        ("postgresql://u:pw@db:5432/foundry", True, "postgresql+psycopg"),
        ("postgresql://u:pw@db:5432/foundry", False, "postgresql+psycopg"),
        ("postgres://u@db/foundry", True, "postgresql+psycopg"),
        ("postgresql+psycopg://u@db/foundry", False, "postgresql+psycopg"),
    ],
)
def test_user_urls_map_to_our_drivers(given: str, is_async: bool, driver: str) -> None:
    url = parse_url(given, is_async=is_async)
    assert url.drivername == driver
    assert url.database == parse_url(given, is_async=not is_async).database


def test_credentials_and_host_are_kept() -> None:
    url = parse_url("postgres://alice:s3cret@db.internal:6543/foundry?sslmode=require", is_async=True)
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "alice", "s3cret", "db.internal", 6543, "foundry"
    )  # fmt: skip
    assert url.query == {"sslmode": "require"}


@pytest.mark.parametrize("given", ["sqlite://", "sqlite:///:memory:", "sqlite+aiosqlite://"])
def test_in_memory_sqlite_is_refused(given: str) -> None:
    with pytest.raises(DatabaseURLError, match="file path"):
        parse_url(given, is_async=True)


@pytest.mark.parametrize("given", ["mysql://root:hunter22@db/foundry", "postgresql+asyncpg://u:hunter22@db/f"])
def test_unsupported_backends_name_the_accepted_forms_without_the_password(given: str) -> None:
    with pytest.raises(DatabaseURLError) as caught:
        parse_url(given, is_async=True)
    assert "sqlite:///" in str(caught.value) and "postgresql://" in str(caught.value)
    assert "hunter22" not in str(caught.value)


def test_unparseable_url_hides_the_password() -> None:
    with pytest.raises(DatabaseURLError) as caught:
        parse_url("not a url://u:hunter22@x", is_async=True)
    assert "hunter22" not in str(caught.value)
