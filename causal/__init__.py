"""The engine, pure PyTorch. Sub-packages import one way: weights -> memory -> sampling -> model."""
