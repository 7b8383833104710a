"""`python3 migrate.py expand|contract`: apply migrations/PHASE/*.sql in name order, each file once,
each in its own transaction. Safe to run again: applied files are recorded in schema_migrations."""

import os
import sys
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent / "migrations"
PHASES = ("expand", "contract")
LOCK = 7301                  # an advisory lock: two runs never apply the same file at once


def main(phase: str) -> None:
    if phase not in PHASES:
        sys.exit(f"migrate: unknown phase {phase!r} (expand or contract)")
    with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=10, autocommit=True) as db:
        db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (phase text, name text, "
                   "applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (phase, name))")
        for path in sorted((HERE / phase).glob("*.sql")):
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
                if db.execute("SELECT 1 FROM schema_migrations WHERE phase = %s AND name = %s",
                              (phase, path.name)).fetchone():
                    continue
                try:
                    db.execute(path.read_text())   # no parameters: several statements are allowed
                except psycopg.Error as exc:
                    sys.exit(f"migrate: {phase}/{path.name}: {str(exc).splitlines()[0]}")
                db.execute("INSERT INTO schema_migrations (phase, name) VALUES (%s, %s)", (phase, path.name))
            print(f"migrate: applied {phase}/{path.name}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
