"""Where the model's forward pass runs: torch itself, or the same model converted to ONNX
Runtime or OpenVINO.

A converted runtime starts from the loaded torch module: the whole SentenceTransformer forward
(transformer, pooling, normalization) is traced into one graph, so what the graph computes is
exactly what `encode` computes, for any model whose modules trace. Tokenizing stays with
sentence-transformers (`preprocess`), so token counts and truncation do not depend on the
runtime. Conversion is done once and kept on disk (`converted_model_dir`); a file lock makes
replicas that start together convert once.

Why these libraries: `openvino` and `onnxruntime` (+ `onnx` for torch's exporter) install
beside the pinned CPU torch without touching it, while `optimum-intel` resolves to another
torch (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ragmeshd.embeddings.slicing import spread_slices

# The runtime names a setting may hold; "auto" picks one (ragmeshd/embeddings/runtime_choice.py).
RUNTIMES = ("torch", "onnx", "openvino")

# CPU threads this process's runtimes may use (limit_cpu_threads); 0: their own choice.
_cpu_threads = 0


def limit_cpu_threads(threads: int) -> None:
    """Bound every runtime this process loads from now on to `threads` CPU threads: torch's
    intra-op pool, ONNX Runtime's, and OpenVINO's (its THROUGHPUT streams share them). 0
    leaves each its own choice: every core it sees, which on Kubernetes without a CPU limit
    is the whole node's. Called once, in the model process, before the model loads."""
    global _cpu_threads
    _cpu_threads = threads
    if threads:
        torch.set_num_threads(threads)


class Runtime(Protocol):
    """Runs one slice of texts through the model."""

    # What runs, e.g. "torch-fp32", "openvino-bf16": part of the embeddings cache's key.
    name: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """One vector per text (float32, as the model's last module leaves it)."""
        ...

    def embed_slices(self, slices: list[list[str]]) -> list[np.ndarray]:
        """`embed` of each (non-empty) slice of one batch; a runtime may run them at once."""
        ...


class TorchRuntime:
    """`SentenceTransformer.encode`, unchanged; fp16 on a GPU."""

    def __init__(self, model: Any, device: str) -> None:
        self._model = model
        if device == "cuda":
            model.half()  # a GPU runs the model in fp16: twice the speed, same ranking
        self.name = "torch-fp16" if device == "cuda" else "torch-fp32"

    def embed(self, texts: list[str]) -> np.ndarray:
        vectors = self._model.encode(
            texts,
            batch_size=len(texts),
            convert_to_numpy=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_slices(self, slices: list[list[str]]) -> list[np.ndarray]:
        # One after the other: each forward pass uses every core already.
        return [self.embed(texts) for texts in slices]


class _GraphRuntime:
    """A converted graph fed with the tokenizer's tensors, by input name."""

    name: str

    def __init__(self, model: Any, input_names: list[str]) -> None:
        self._model = model
        self._input_names = input_names

    def _inputs(self, texts: list[str]) -> list[np.ndarray]:
        features = self._model.preprocess(texts)
        return [features[name].numpy() for name in self._input_names]


class OnnxRuntime(_GraphRuntime):
    def __init__(self, model: Any, directory: Path, input_names: list[str]) -> None:
        import onnxruntime

        super().__init__(model, input_names)
        options = onnxruntime.SessionOptions()
        if _cpu_threads:
            options.intra_op_num_threads = _cpu_threads
        self._session = onnxruntime.InferenceSession(
            str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.name = "onnx-fp32"

    def embed(self, texts: list[str]) -> np.ndarray:
        inputs = dict(zip(self._input_names, self._inputs(texts), strict=True))
        return np.asarray(self._session.run(None, inputs)[0], dtype=np.float32)

    def embed_slices(self, slices: list[list[str]]) -> list[np.ndarray]:
        return [self.embed(texts) for texts in slices]


class OpenVinoRuntime(_GraphRuntime):
    """OpenVINO on the CPU with the THROUGHPUT hint: OpenVINO splits the cores into streams
    (on 2 cores: 2 streams of one thread) and a batch's slices run on them at once, one infer
    request per stream. bf16 where the CPU has bf16 instructions, else fp32.

    Why not one request using every core (the LATENCY hint): its threads meet at every layer,
    so a thread that loses its core to the server or Envoy stalls the other, which waits
    spinning. Measured on 2 cores (docs/benchmarks.md, issue 11): on the server's batches of
    32 unsorted texts one 2-thread request cost 2.4 CPU-ms per text alone and 3.3 beside the
    mesh's other processes; two 1-thread streams cost 1.8 and run faster alone too. Threads
    are not pinned to cores: the server shares them."""

    def __init__(self, model: Any, directory: Path, input_names: list[str]) -> None:
        import openvino

        super().__init__(model, input_names)
        core = openvino.Core()
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        precision = "bf16" if "BF16" in capabilities else "f32"
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "THROUGHPUT",
            "ENABLE_CPU_PINNING": False,
        }
        if _cpu_threads:
            # Streams within the pod's share (its CPU request), not the node's cores.
            config["INFERENCE_NUM_THREADS"] = _cpu_threads
        compiled = core.compile_model(core.read_model(str(directory / "model.xml")), "CPU", config)
        self.streams = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        self._queue = openvino.AsyncInferQueue(compiled, self.streams)
        self._queue.set_callback(_keep_output)
        self.name = f"openvino-{'bf16' if precision == 'bf16' else 'fp32'}"

    def embed(self, texts: list[str]) -> np.ndarray:
        # One batch alone (parity, timing, the raw bench): one contiguous part per stream.
        if not texts:
            return np.empty((0, 0), dtype=np.float32)
        size = -(-len(texts) // self.streams)
        parts = [texts[start : start + size] for start in range(0, len(texts), size)]
        return np.concatenate(self.embed_slices(parts))

    def embed_slices(self, slices: list[list[str]]) -> list[np.ndarray]:
        parts = spread_slices(slices, self.streams)
        outputs: list[np.ndarray] = [np.empty(0)] * len(parts)
        # Largest first, so the last part to start is a small one (streams finish together).
        for index in sorted(range(len(parts)), key=lambda i: -_padded_chars(parts[i])):
            # Blocks until a stream is free; tokenizes the next part while others run.
            self._queue.start_async(self._inputs(parts[index]), (outputs, index))
        self._queue.wait_all()
        if any(len(out) != len(part) for out, part in zip(outputs, parts, strict=True)):
            raise RuntimeError("an OpenVINO infer request returned no output for its texts")
        merged: list[np.ndarray] = []
        position = 0
        for texts in slices:  # parts are slices or consecutive halves of one, in order
            taken = 0
            pieces = []
            while taken < len(texts):
                pieces.append(outputs[position])
                taken += len(parts[position])
                position += 1
            merged.append(pieces[0] if len(pieces) == 1 else np.concatenate(pieces))
        return merged


def _keep_output(request: Any, destination: tuple[list[np.ndarray], int]) -> None:
    """AsyncInferQueue's callback: copy the output out of the request, which reuses it."""
    outputs, index = destination
    outputs[index] = np.array(request.get_output_tensor(0).data, dtype=np.float32)


def _padded_chars(texts: list[str]) -> int:
    return len(texts) * max(map(len, texts))


def load_runtime(name: str, model: Any, identity: str, device: str, cache_dir: Path) -> Runtime:
    """The runtime `name` for the loaded `model`, converting it first if not cached."""
    if name == "torch":
        return TorchRuntime(model, device)
    if device != "cpu":
        raise ValueError(f"the {name} runtime runs on the CPU only; set device to cpu or auto")
    directory, input_names = converted_model_dir(name, model, identity, cache_dir)
    if name == "onnx":
        return OnnxRuntime(model, directory, input_names)
    if name == "openvino":
        return OpenVinoRuntime(model, directory, input_names)
    raise ValueError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")


def model_identity(model_dir: Path) -> str:
    """A digest of the model's files: a changed model never reuses an old conversion."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model_dir)).encode())
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _converter_version(name: str) -> str:
    if name == "openvino":
        import openvino

        return f"openvino{openvino.__version__.split('-')[0]}-torch{torch.__version__}"
    import onnx

    return f"onnx{onnx.__version__}-torch{torch.__version__}"


def converted_model_dir(
    name: str, model: Any, identity: str, cache_dir: Path
) -> tuple[Path, list[str]]:
    """The directory holding `model` converted for runtime `name`, and the graph's input
    names; converts (under a lock, written aside and renamed into place) when missing."""
    key = f"{identity}/{name}-{_converter_version(name)}"
    directory = cache_dir / key
    manifest = directory / "manifest.json"
    if not manifest.exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(directory.parent / f".{directory.name}.lock"):
            if not manifest.exists():
                _convert(name, model, directory)
    return directory, list(json.loads(manifest.read_text())["input_names"])


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert(name: str, model: Any, directory: Path) -> None:
    features = model.preprocess(["ragmesh conversion example", "a second, longer example text"])
    input_names = [key for key, value in features.items() if isinstance(value, torch.Tensor)]
    example = tuple(features[key] for key in input_names)
    graph = _SentenceEmbeddingGraph(model, input_names).eval()
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with torch.no_grad():
        if name == "openvino":
            import openvino

            converted = openvino.convert_model(graph, example_input=example)
            # Weights stay fp32 on disk (the default would halve them to fp16).
            openvino.save_model(converted, str(partial / "model.xml"), compress_to_fp16=False)
        else:
            axes = {key: {0: "batch", 1: "tokens"} for key in input_names}
            torch.onnx.export(
                graph,
                example,
                str(partial / "model.onnx"),
                input_names=input_names,
                output_names=["sentence_embedding"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
    (partial / "manifest.json").write_text(json.dumps({"input_names": input_names}))
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)


class _SentenceEmbeddingGraph(torch.nn.Module):
    """The SentenceTransformer forward with positional tensor inputs, for tracing."""

    def __init__(self, model: Any, input_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        features = dict(zip(self.input_names, tensors, strict=True))
        return self.model(features)["sentence_embedding"]
