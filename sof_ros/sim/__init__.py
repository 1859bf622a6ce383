"""Simulated arms (MetaWorld Sawyer) rendering RGB, depth, segmentation and camera models headlessly."""
