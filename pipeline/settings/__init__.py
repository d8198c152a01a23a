"""Settings: the params.yaml schema, how it is read, overridden and rewritten."""
