"""The software pipeline: configuration, data, training, export, the run directory and the CLI."""
