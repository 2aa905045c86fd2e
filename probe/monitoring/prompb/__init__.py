"""Protocol buffers of Prometheus remote write 1.0 (`remote.proto`, a subset of prometheus'
prompb, Apache License 2.0). `remote_pb2.py` and `remote_pb2.pyi` are generated: after editing
the .proto, run from the repository root

    pip install grpcio-tools
    python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. probe/monitoring/prompb/remote.proto

The generated module needs a protobuf runtime at least as new as the compiler that wrote it
(its header says which: pyproject.toml pins that minimum).
"""
