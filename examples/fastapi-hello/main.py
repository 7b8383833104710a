"""A small FastAPI app: greets, shows its environment's settings, answers /health."""

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from imagebuild_runtime import config, environment, feature

app = FastAPI(title="fastapi-hello")


@app.get("/")
def index() -> dict:
    return {
        "message": "Hello from FastAPI",
        "environment": environment() or "unknown",
        "log_level": config("LOG_LEVEL", "unset"),
        "dark_mode": feature("dark_mode"),
    }


@app.get("/health", response_class=PlainTextResponse)
def health() -> str:
    return "ok\n"
