"""Measuring artefacts: latency and accuracy per runtime (``cakd bench-latency``); it only reads files."""
