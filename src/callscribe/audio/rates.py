"""The two sample rates the project lives by."""

TELEPHONY_RATE = 8000  # G.711 and the L16 of the ASAPP direct WebSocket
MODEL_RATE = 16000  # what Whisper and Silero VAD take; everything is resampled to it
