"""The `probe` command: thin click commands, one module per command (run and check in `measure`,
`results`, `serve`, `daemon`, `lab`); they parse options and call the packages that do the work.
Results go to stdout, progress and logs to stderr, so `probe run --json | jq` works."""

from probe.cli.main import main

__all__ = ["main"]
