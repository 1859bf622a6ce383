"""Stage 2: the skill policy."""
