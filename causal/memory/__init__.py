"""GPU memory: offload modes, weight slots, the residency log, the planner and out-of-memory advice.

Imports from causal.sampling and causal.model only (weights -> memory -> sampling -> model)."""
