"""The ``agentos`` command line."""
