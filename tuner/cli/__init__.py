"""The `tuner` command line: verbs that parse their flags and call one function each.

common (the app, shared options, study lookup), errors (one line per user error), study_verbs
(run, studies, status, report), model_verbs (best, retrain, visualize, predict, export,
dashboard), confirm_verb (confirm), views (the tables they print). The work itself is in the
subpackages of `tuner`.
"""

# isort: off
# Verbs register when imported, in the order `tuner --help` lists them.
from tuner.cli import study_verbs, model_verbs, confirm_verb  # noqa: F401
# isort: on

from tuner.cli.common import app
from tuner.cli.study_verbs import Precision

__all__ = ["Precision", "app"]
