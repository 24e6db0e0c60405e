"""Streaming transducer ASR (RNN-T and TDT) in plain torch; see docs/transducer.md."""
