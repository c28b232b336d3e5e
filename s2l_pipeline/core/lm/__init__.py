"""Language models: build, tokenize, train with checkpoints, generate, score losses, embed."""
