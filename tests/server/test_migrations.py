"""The Alembic revisions build exactly the schema models.py describes, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from trapline.server.models import Base


def test_migrations_match_the_models(database_url: str, sessions_for: Any) -> None:
    engine = sessions_for(database_url).kw["bind"]
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
