"""callscribe: a self-hosted real-time call and meeting transcription gateway."""

__version__ = "0.1.0"
