"""Toy world: procedurally generated videos with exactly known attributes, and an analytic classifier for them."""
