"""The ``gemma-scope`` subcommands; the parser is ``gemma_scope_cli`` (outside, so --help needs no torch)."""
