"""Training: compile and fit one model, augmentation layers, metrics, the runner that records a run, predict."""
