"""One write and one read through this version's column, rolled back: does this code still work
against the database as it is now? Run by `imagebuild deploy` from the serving image after expand."""

import os
import sys

import psycopg
from psycopg import sql

from people import NAME_COLUMN

NAME = sql.Identifier(NAME_COLUMN)

with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5) as db:
    try:
        person = db.execute(sql.SQL("INSERT INTO people ({}) VALUES (%s) RETURNING id").format(NAME),
                            ("smoke test",)).fetchone()[0]
        found = db.execute(sql.SQL("SELECT {} FROM people WHERE id = %s").format(NAME), (person,)).fetchone()
    except psycopg.Error as exc:
        sys.exit(f"smoke: {NAME_COLUMN}: {str(exc).splitlines()[0]}")
    finally:
        db.rollback()   # leaves no row behind
if found != ("smoke test",):
    sys.exit(f"smoke: read back {found!r}")
print(f"smoke: {NAME_COLUMN} reads and writes")
