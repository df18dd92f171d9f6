"""A protoc plugin that emits grpc-python stubs with grpcio-tools' bundled generator.

buf has no built-in grpc_python generator and no remote plugins are reachable offline, so this
plugin hands buf's CodeGeneratorRequest to grpc_tools.protoc as a descriptor set and returns
the files it writes.
"""

import pathlib
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> None:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    with tempfile.TemporaryDirectory() as workdir:
        work = pathlib.Path(workdir)
        descriptor_set = work / "request.binpb"
        descriptor_set.write_bytes(
            descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString()
        )
        out = work / "out"
        out.mkdir()
        exit_code = protoc.main(
            [
                "protoc",
                f"--descriptor_set_in={descriptor_set}",
                f"--grpc_python_out={out}",
                *request.file_to_generate,
            ]
        )
        if exit_code != 0:
            response.error = f"grpc_tools.protoc exited with {exit_code}"
        else:
            for path in sorted(out.rglob("*.py")):
                response.file.add(name=str(path.relative_to(out)), content=path.read_text())
    sys.stdout.buffer.write(response.SerializeToString())


if __name__ == "__main__":
    main()
