"""Bayesian Sample Inference."""
