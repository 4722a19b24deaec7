"""Training: the linear head over features (fast path), and the one adapter to Hugging Face models."""
