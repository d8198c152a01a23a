"""Files: atomic writes, checkpoints, the default paths, and nothing written outside the outputs."""
