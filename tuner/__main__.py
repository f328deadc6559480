"""`python -m tuner` runs the CLI (worker processes are started this way)."""

from tuner.cli import app

app(prog_name="tuner")
