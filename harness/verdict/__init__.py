"""Figures and verdicts: pure functions from recorded events to numbers a person and a machine can read."""
