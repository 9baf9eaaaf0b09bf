"""DMD (Self-Forcing) training of causal Wan generators, dense or expert pairs: pure PyTorch + accelerate.

Imports point down only: training -> weights -> memory -> sampling -> model. Start at trainer.py."""
