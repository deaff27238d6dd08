"""Measurement: ``simsiam bench`` (where a step's time goes, against a reference) and the machine's peak probes."""
