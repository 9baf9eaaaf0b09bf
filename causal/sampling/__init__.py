"""Sampling: the few-step schedule, the expert pair, the prompt schedule and the Stream (the one sampler).

Imports only from causal.model (weights -> memory -> sampling -> model)."""
