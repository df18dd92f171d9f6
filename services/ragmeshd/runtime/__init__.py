"""What every ragmesh gRPC server shares: logging, interceptors, serving lifecycle."""
