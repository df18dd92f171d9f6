"""Calling ragmesh from Python with the generated stubs: mutual TLS and an API key read from a
file.

    .venv/bin/python docs/clients/python/embed.py 127.0.0.1:8443 .ragmesh "some text"

Arguments: Envoy's client listener, the mesh's state folder (its CA, the client certificate
and keys/admin.key), the texts to embed. Prints one JSON line per text. Needs only `grpcio`
and the stubs (`gen/python` on the path, or the installed `ragmesh` package).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import grpc

from ragmesh.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from ragmesh.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc


def secure_channel(target: str, state_dir: Path) -> grpc.Channel:
    """Mutual TLS: trust only the mesh's CA and present the client certificate."""
    certs = state_dir / "certs"
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=(certs / "clients" / "client-key.pem").read_bytes(),
        certificate_chain=(certs / "clients" / "client.pem").read_bytes(),
    )
    return grpc.secure_channel(target, credentials)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: embed.py HOST:PORT STATE_DIR TEXT...", file=sys.stderr)
        return 2
    target, state_dir, texts = argv[0], Path(argv[1]), argv[2:]
    # The key comes from a file, never from a flag (it would show in `ps` and shell history).
    key = (state_dir / "keys" / "admin.key").read_text().strip()
    with secure_channel(target, state_dir) as channel:
        stub = embeddings_grpc.EmbeddingsServiceStub(channel)
        try:
            response = stub.Embed(
                embeddings_pb.EmbedRequest(inputs=texts),
                metadata=[("authorization", f"Bearer {key}")],
                timeout=30,
            )
        except grpc.RpcError as error:
            print(f"Embed failed: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    for text, embedding in zip(texts, response.embeddings, strict=True):
        head = [round(value, 4) for value in embedding.values[:3]]
        line = {
            "text": text,
            "model": response.model,
            "dimensions": response.dimensions,
            "tokens": embedding.token_count,
            "head": head,
        }
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
