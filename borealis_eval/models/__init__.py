"""Models: encoder, adapter, speech LM, baseline Whisper, offline weight import."""
