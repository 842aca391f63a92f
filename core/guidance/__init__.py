"""Guidance: what turns a rendered image into a loss (Score Distillation Sampling and friends)."""
