"""
Tests for zotwist, run with trial.
"""
