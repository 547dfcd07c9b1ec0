"""bsi's hydra launchers (``hydra/launcher=local|slurm``)."""
