"""Sending rendered messages: the transport port, retry decisions and rate limits."""
