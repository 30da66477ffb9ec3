"""Shipped predictor artifacts (JSON): boosters and metadata written by `foundry tune train`."""
