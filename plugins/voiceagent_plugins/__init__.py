"""Backends for voiceagent. Each module imports its heavy dependency only when used."""
