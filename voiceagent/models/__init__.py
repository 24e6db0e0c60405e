"""Model files shipped in the package (the learned end-of-turn model)."""
