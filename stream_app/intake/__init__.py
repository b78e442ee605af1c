"""Intake: one agent per input topic parses raw bytes into events or dead letters."""

from stream_app.intake import agents

__all__ = ["agents"]
