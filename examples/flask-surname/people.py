"""People and their last names, stored in PostgreSQL.

v1 of this app read and wrote the column `surname`; v2 (this file) reads and writes
`last_name`. Between the two, the expand migration adds `last_name` and a trigger that
keeps both columns equal, so v1 and v2 can serve side by side during the swap, and a
rollback to v1 before the contract migration loses nothing.
"""

import os

import psycopg
from flask import Flask, jsonify, request
from psycopg import sql

NAME_COLUMN = "last_name"   # v1: "surname"

app = Flask(__name__)
NAME = sql.Identifier(NAME_COLUMN)


def connect() -> psycopg.Connection:
    return psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5, autocommit=True)


@app.get("/")
def index():
    return jsonify(app="flask-surname", column=NAME_COLUMN)


@app.post("/people")
def add_person():
    name = request.get_json(force=True)["name"]
    with connect() as db:
        row = db.execute(sql.SQL("INSERT INTO people ({}) VALUES (%s) RETURNING id").format(NAME), (name,)).fetchone()
    return jsonify(id=row[0], name=name, column=NAME_COLUMN), 201


@app.get("/people/<int:person>")
def show_person(person: int):
    with connect() as db:
        row = db.execute(sql.SQL("SELECT id, {} FROM people WHERE id = %s").format(NAME), (person,)).fetchone()
    if row is None:
        return jsonify(error=f"no person {person}"), 404
    return jsonify(id=row[0], name=row[1], column=NAME_COLUMN)


@app.put("/people/<int:person>")
def rename_person(person: int):
    name = request.get_json(force=True)["name"]
    with connect() as db:
        db.execute(sql.SQL("UPDATE people SET {} = %s WHERE id = %s").format(NAME), (name, person))
    return jsonify(id=person, name=name, column=NAME_COLUMN)


@app.get("/health")
def health():
    # The columns this version uses must exist: after a bad expand, the old version fails here.
    with connect() as db:
        db.execute(sql.SQL("SELECT id, {} FROM people LIMIT 1").format(NAME))
    return "ok\n", 200, {"Content-Type": "text/plain"}
