"""CAP: a WebSocket service that turns boxes on an image into SAM masks."""

__version__ = "0.1.0"
