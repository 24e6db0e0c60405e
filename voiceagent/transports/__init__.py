"""Transports: where a session's audio comes from and where the agent's voice goes."""
