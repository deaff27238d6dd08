"""What a run leaves on disk: atomic checkpoints read without unpickling, the metrics log, plots and report."""
