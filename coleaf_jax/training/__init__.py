"""Training: the losses and objectives, the jitted step, the epoch loop, checkpoints, the workdir, many seeds, several processes."""
