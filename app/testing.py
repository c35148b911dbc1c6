"""The pytest plugin (placeholder until the guard lands in this session)."""
