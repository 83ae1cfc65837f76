"""Use cases of the help desk, each a small service with its dependencies passed in."""
