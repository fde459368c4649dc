"""One module per ``agentos`` subcommand, each with ``register(subparsers)``."""
