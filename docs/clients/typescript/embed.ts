// Calling ragmesh from TypeScript: @grpc/grpc-js over mutual TLS with an API key read from a
// file, the types loaded at run time from the repository's .proto files (@grpc/proto-loader).
//
//   npm ci && npx tsc -p . && node dist/embed.js 127.0.0.1:8443 ../../../.ragmesh "some text"
//
// Arguments: Envoy's client listener, the mesh's state folder (its CA, the client certificate
// and keys/admin.key), the texts to embed. Prints one JSON line per text.
import * as fs from "node:fs";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const REPO = path.resolve(__dirname, "..", "..", "..", "..");

interface Embedding {
  values: number[];
  tokenCount: number;
  truncated: boolean;
}
interface EmbedResponse {
  embeddings: Embedding[];
  model: string;
  dimensions: number;
}
type EmbedCallback = (error: grpc.ServiceError | null, response?: EmbedResponse) => void;
interface EmbeddingsClient extends grpc.Client {
  Embed(request: { inputs: string[] }, metadata: grpc.Metadata, options: grpc.CallOptions, callback: EmbedCallback): grpc.ClientUnaryCall;
}

function embeddingsClient(target: string, stateDir: string): EmbeddingsClient {
  const definition = protoLoader.loadSync("ragmesh/embeddings/v1/embeddings_service.proto", {
    includeDirs: [path.join(REPO, "protos"), path.join(REPO, "third_party", "googleapis")],
    keepCase: false,
    defaults: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as any;
  const certs = path.join(stateDir, "certs");
  // Mutual TLS: trust only the mesh's CA and present the client certificate.
  const credentials = grpc.credentials.createSsl(
    fs.readFileSync(path.join(certs, "ca.pem")),
    fs.readFileSync(path.join(certs, "clients", "client-key.pem")),
    fs.readFileSync(path.join(certs, "clients", "client.pem")),
  );
  return new loaded.ragmesh.embeddings.v1.EmbeddingsService(target, credentials);
}

function main(): void {
  const [target, stateDir, ...texts] = process.argv.slice(2);
  if (!target || !stateDir || texts.length === 0) {
    console.error("usage: node dist/embed.js HOST:PORT STATE_DIR TEXT...");
    process.exit(2);
  }
  // The key comes from a file, never from a flag (it would show in `ps` and shell history).
  const key = fs.readFileSync(path.join(stateDir, "keys", "admin.key"), "utf8").trim();
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${key}`);
  const client = embeddingsClient(target, stateDir);
  const deadline = new Date(Date.now() + 30_000);
  client.Embed({ inputs: texts }, metadata, { deadline }, (error, response) => {
    client.close();
    if (error || !response) {
      console.error(`Embed failed: ${grpc.status[error?.code ?? grpc.status.UNKNOWN]}: ${error?.details}`);
      process.exit(1);
    }
    response.embeddings.forEach((embedding, i) => {
      const head = embedding.values.slice(0, 3).map((v) => Number(v.toFixed(4)));
      console.log(JSON.stringify({ text: texts[i], model: response.model, dimensions: response.dimensions, tokens: embedding.tokenCount, head }));
    });
  });
}

main();
