"""A small Flask app: greets, shows its environment's settings, answers /health."""

from flask import Flask, jsonify
from imagebuild_runtime import config, environment, feature

app = Flask(__name__)


@app.get("/")
def index():
    checkout = "new checkout" if feature("new_checkout") else "classic checkout"
    return jsonify(
        message=f"Hello from Flask ({checkout})",
        environment=environment() or "unknown",
        log_level=config("LOG_LEVEL", "unset"),
        new_checkout=feature("new_checkout"),
    )


@app.get("/health")
def health():
    return "ok\n", 200, {"Content-Type": "text/plain"}
