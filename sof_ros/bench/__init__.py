"""Benchmarks behind `sof-bench <name>`; each writes results with command, commit and machine."""
