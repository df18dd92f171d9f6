"""Every tunable's default, in one place.

Settings (services/config.py) read these; nothing else hard-codes a limit.
"""

from typing import Literal

# Where ragmesh keeps certificates, keys, the embedded database and logs.
STATE_DIR = ".ragmesh"

# Embeddings: request limits.
MAX_CLIENT_BATCH = 32
MAX_INPUT_CHARS = 10_000

# Embeddings: server-side dynamic batching.
MAX_BATCH_TEXTS = 64
MAX_BATCH_DELAY_MS = 5
# Inside one batch the model runs length-sorted slices of this many texts: on CPU, slices of
# 16 cut padding enough to beat one 64-wide slice by ~15% (see docs/benchmarks.md).
MICRO_BATCH_TEXTS = 16
# Texts waiting for the model; past this a call is refused with RESOURCE_EXHAUSTED.
MAX_QUEUE_TEXTS = 4096

# Embeddings: model loading, retried with exponential backoff.
MODEL_LOAD_ATTEMPTS = 3
MODEL_LOAD_BACKOFF_BASE_S = 5.0
DEVICE: Literal["auto", "cpu", "cuda"] = "auto"

# gRPC serving.
EMBEDDINGS_LISTEN = "127.0.0.1:50051"
SEARCH_LISTEN = "127.0.0.1:50052"
COORDINATOR_LISTEN = "127.0.0.1:50053"
# Deadline applied to a call whose client set none.
DEFAULT_DEADLINE_S = 30.0
# How long a stopping server stays up NOT_SERVING so the proxy stops sending it work.
SHUTDOWN_DRAIN_S = 0.0
# How long in-flight calls may run after the server stops accepting new ones.
SHUTDOWN_GRACE_S = 10.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
