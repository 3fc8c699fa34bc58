"""Prompt text: composing prompts and encoding them window by window for both text encoders."""
