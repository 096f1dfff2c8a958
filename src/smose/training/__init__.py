"""Training: the configuration that is also the CLI, the training loop (trainer.py), its run directory, logs, replay
buffer and checkpoints, fine-tuning under distilled trees."""
