"""tuner: hyperparameter tuning for CNN image classifiers on Optuna and PyTorch."""

__version__ = "0.1.0"
