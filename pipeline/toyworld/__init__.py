"""Toy world: procedurally generated videos with exactly known attributes, an analytic classifier for them, and the
small text-to-video model the project trains on them (shipped in `model/`, the daemon's default `--model`)."""
import os

MODEL_NAME = "toyworld"
MODEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model")
