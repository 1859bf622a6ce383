"""Training data, training loops and reports for the three SOF stages (pure PyTorch)."""
