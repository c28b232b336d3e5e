"""The selection study on a user's own data: its cells, and what they add up to."""
