"""harness: an AutoML and benchmark harness for Kaggle's Histopathologic Cancer Detection."""

__version__ = "0.1.0"
