"""The stages of an agent session, one module each."""
