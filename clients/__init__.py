"""Command-line clients that talk to the voice agent through a LiveKit room."""
