"""Evaluation and benchmark helpers: speech clips with transcripts, word error rate, the
turn-taking test set. Tests, benchmarks and training use them; nothing in ``voiceagent``
imports them at run time, so a deployed agent carries none of it."""
