#!/usr/bin/env python3
"""A gRPC client for ca-server written against grpcio (not our Rust stack), for
tests/grpc_python.rs: an independent implementation of HTTP/2, TLS and protobuf must be
able to use the API with the admin credential.

    ca_client.py --proto-root DIR --target HOST:PORT --root root.pem
                 [--cert admin.pem --key admin.key] --csr req.pem --out cert.pem

Generates the stubs from DIR/ca/v1/ca.proto (and its imports) with grpc_tools.protoc into
a temporary directory, then calls GetCaCertificates and SignCsr over TLS and writes the
issued certificate (leaf then chain, PEM). Prints one `key=value` line per result for the
test to read. On an RPC error prints `error=<CODE> <details>` and exits 2.
"""

import argparse
import importlib
import os
import sys
import tempfile


def generate_stubs(proto_root, out_dir):
    from grpc_tools import protoc
    import grpc_tools

    # protoc needs the well-known types' include dir only for google/* imports; pass it anyway.
    wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    protos = [os.path.join("ca", "v1", f) for f in ("ca.proto", "events.proto")]
    rc = protoc.main(
        ["grpc_tools.protoc", "-I" + proto_root, "-I" + wkt, "--python_out=" + out_dir,
         "--grpc_python_out=" + out_dir] + protos
    )
    if rc != 0:
        sys.exit("protoc failed with %d" % rc)
    sys.path.insert(0, out_dir)
    return importlib.import_module("ca.v1.ca_pb2"), importlib.import_module("ca.v1.ca_pb2_grpc")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--proto-root", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--csr", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--timeout", type=float, default=20.0)
    a = p.parse_args()

    import grpc

    with tempfile.TemporaryDirectory() as gen:
        pb2, pb2_grpc = generate_stubs(a.proto_root, gen)
        creds = grpc.ssl_channel_credentials(
            root_certificates=read(a.root),
            private_key=read(a.key) if a.key else None,
            certificate_chain=read(a.cert) if a.cert else None,
        )
        opts = [("grpc.ssl_target_name_override", a.server_name)]
        print("grpcio=%s" % grpc.__version__, flush=True)
        with grpc.secure_channel(a.target, creds, options=opts) as ch:
            stub = pb2_grpc.CertificateAuthorityStub(ch)
            try:
                ca = stub.GetCaCertificates(pb2.GetCaCertificatesRequest(), timeout=a.timeout)
                print("ca_chain_pem_bytes=%d" % len(ca.chain_pem), flush=True)
                resp = stub.SignCsr(pb2.SignCsrRequest(csr=read(a.csr)), timeout=a.timeout)
            except grpc.RpcError as e:
                print("error=%s %s" % (e.code().name, e.details()), flush=True)
                sys.exit(2)
        with open(a.out, "w") as f:
            f.write(resp.certificate_pem)
        print("serial=%s" % resp.serial)
        print("chain_len=%d" % len(resp.chain_der))


if __name__ == "__main__":
    main()
