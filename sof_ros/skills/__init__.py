"""Stage 1: skill tokens from optical-flow segments."""
