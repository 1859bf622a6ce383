"""Optical flow: estimators (DIS, Farneback, optional local-weights RAFT), simulator ground truth,
visualisations and the batch extractor `sof-flow` that fills `flow/<estimator>` in a dataset.

Flow everywhere is (H, W, 2) float32 pixels, x (column) then y (row), from frame t to frame t+1.
"""
from sof_ros.flow.estimators import ESTIMATORS, FlowEstimator, make_estimator

__all__ = ["ESTIMATORS", "FlowEstimator", "make_estimator"]
