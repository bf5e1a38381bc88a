"""The streaming loader: plan (pure functions), stream (tar reading), dataset, loader."""
