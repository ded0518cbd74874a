"""The `distill` subcommands, one module each (`add_arguments`, `run`); `distill.cli` is their table."""
