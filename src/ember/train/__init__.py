"""The training loop and what it needs: device, precision, parallelism, checkpoints, optimizers."""
