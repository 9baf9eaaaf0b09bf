"""The one way in for weights: format detection, key maps, config inference, assembly on the meta device, umT5.

Entry points live in causal.weights.loader (transformer and expert pair) and causal.weights.text_encoder."""
