"""Judging a fine-tuned model: answer scorers, and a checkpoint's evaluation on the eval table."""
