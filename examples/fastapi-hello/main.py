"""A small FastAPI app: greets, shows its environment's settings, answers /health."""

import os

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI(title="fastapi-hello")


def feature(name: str) -> bool:
    return os.environ.get(f"FEATURE_{name.upper()}", "false").lower() in ("1", "true", "yes", "on")


@app.get("/")
def index() -> dict:
    return {
        "message": "Hello from FastAPI",
        "environment": os.environ.get("IMAGEBUILD_ENV", "unknown"),
        "log_level": os.environ.get("LOG_LEVEL", "unset"),
        "dark_mode": feature("dark_mode"),
    }


@app.get("/health", response_class=PlainTextResponse)
def health() -> str:
    return "ok\n"
