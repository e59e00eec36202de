"""The `newsletter` command: builds the parts from config, calls them, prints the outcome."""

from newsletter.cli import (
    admin,
    broadcast,
    content,
    dkim,
    doctor,
    forecast,
    inbound,
    running,
    sending,
    sendtest,
    web,
)
from newsletter.cli.app import app, main

__all__ = [
    "admin",
    "app",
    "broadcast",
    "content",
    "dkim",
    "doctor",
    "forecast",
    "inbound",
    "main",
    "running",
    "sending",
    "sendtest",
    "web",
]
