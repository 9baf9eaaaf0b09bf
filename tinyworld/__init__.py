"""A tiny world the pack learns from scratch on a CPU: data, training recipe, and the release folder it ships."""
