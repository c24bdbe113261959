"""Shared settings of the tune tests (a plain module: tests/test_cli.py already imports `conftest`)."""

# Tiny trials: an MLP on 500 MNIST-1D samples, 2 epochs (well under a second of training each).
TINY = ["model=mlp", "model.width=32", "data.num_samples=500", "trainer.max_epochs=2", "trainer.tensorboard=false"]
LR = "++tune.space.optim.lr={type:float,low:1e-4,high:1e-1,log:true}"
WIDTH = "++tune.space.model.width={type:int,low:16,high:64,step:16}"
