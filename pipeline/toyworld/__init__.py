"""Toy world: procedurally generated videos with exactly known attributes, an analytic classifier for them, and the
small text-to-video model the project trains on them (shipped in `model/`, the daemon's default `--model`)."""
from pipeline.modelinfo import SHIPPED

MODEL_NAME = "toyworld"
MODEL_DIR = SHIPPED[MODEL_NAME]
# its real-time member: 4 steps, no CFG, trained on the context --reuse-context serves (train_rt.py), with a tiny
# decoder for the toy world's VAE
RT_MODEL_NAME = "toyworld-rt"
RT_MODEL_DIR = SHIPPED[RT_MODEL_NAME]
MODELS = {MODEL_NAME: MODEL_DIR, RT_MODEL_NAME: RT_MODEL_DIR}
