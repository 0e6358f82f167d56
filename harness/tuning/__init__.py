"""Hyperparameter search: one space protocol, two engines (Optuna, KerasTuner), trials through the runner, workers."""
