"""Search engines: Optuna and KerasTuner drive the same spaces, and every trial goes through `Runner.run`."""
