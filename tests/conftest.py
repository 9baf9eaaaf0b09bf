"""Test-session settings: tiny models run fastest on one thread (threading overhead outweighs the work)."""
import torch

torch.set_num_threads(1)
