"""A small Flask app: greets, shows its environment's settings, answers /health."""

import os

from flask import Flask, jsonify

app = Flask(__name__)


def feature(name: str) -> bool:
    return os.environ.get(f"FEATURE_{name.upper()}", "false").lower() in ("1", "true", "yes", "on")


@app.get("/")
def index():
    checkout = "new checkout" if feature("new_checkout") else "classic checkout"
    return jsonify(
        message=f"Hello from Flask ({checkout})",
        environment=os.environ.get("IMAGEBUILD_ENV", "unknown"),
        log_level=os.environ.get("LOG_LEVEL", "unset"),
        new_checkout=feature("new_checkout"),
    )


@app.get("/health")
def health():
    return "ok\n", 200, {"Content-Type": "text/plain"}
