"""Database: SQLAlchemy 2 models (:mod:`.models`), engine and sessions (:mod:`.session`),
Alembic migrations run programmatically (:mod:`.migrate`)."""
