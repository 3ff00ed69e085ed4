"""A FAKE on-device `llama-server` for tests: it takes llama.cpp's llama-server arguments and replaces itself
(exec, same pid) with llama-cpp-python's server on this host, which speaks the same OpenAI-compatible API."""

import argparse
import os
import sys

ap = argparse.ArgumentParser()
ap.add_argument("-m", "--model", required=True)
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--port", required=True)
ap.add_argument("-t", "--threads", default="2")
ap.add_argument("-c", "--ctx-size", default="2048")
ap.add_argument("-b", "--batch-size", default="64")
ap.add_argument("-np", "--parallel", default="1")
ap.add_argument("--alias", default=None)
ap.add_argument("--no-mmap", action="store_true")
a = ap.parse_args()
if not os.path.isfile(a.model):
    sys.exit(f"error: failed to load model '{a.model}'")
os.execv(sys.executable, [sys.executable, "-m", "llama_cpp.server", "--model", a.model, "--host", a.host,
                          "--port", a.port, "--n_ctx", a.ctx_size, "--n_threads", a.threads, "--n_threads_batch",
                          a.threads, "--n_batch", a.batch_size, "--model_alias", a.alias or "model",
                          "--use_mlock", "False"])
