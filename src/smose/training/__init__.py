"""Training: the configuration that is also the CLI, the trainer and its run directory, replay buffer, checkpoints,
fine-tuning under distilled trees."""
