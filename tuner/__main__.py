"""`python -m tuner` runs the CLI."""

from tuner.cli import app

if __name__ == "__main__":  # not when a worker process ('spawn') imports the main module
    app(prog_name="tuner")
