"""The `newsletter` command: builds the parts from config, calls them, prints the outcome."""

from newsletter.cli import admin, content, running, sending, sendtest, web
from newsletter.cli.app import app, main

__all__ = ["admin", "app", "content", "main", "running", "sending", "sendtest", "web"]
