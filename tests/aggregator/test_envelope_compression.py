"""Migration 0002: on PostgreSQL with lz4, envelope bodies and receipts are stored lz4-compressed
(cheaper for the database's CPU than pglz at the same size); stored bytes are unchanged."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.postgres


def test_envelope_columns_use_lz4_where_the_server_has_it(_pg_migrated: str) -> None:
    engine = create_engine(_pg_migrated.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            has_lz4 = conn.execute(
                text(
                    "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
                    "AND 'lz4' = ANY(enumvals)"
                )
            ).first()
            modes = dict(
                conn.execute(
                    text(
                        "SELECT attname, attcompression FROM pg_attribute "
                        "WHERE attrelid = 'envelopes'::regclass AND attname IN ('body', 'receipt')"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    if has_lz4 is None:
        pytest.skip("this PostgreSQL server was built without lz4")
    assert modes == {"body": "l", "receipt": "l"}
