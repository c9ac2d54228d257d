#!/usr/bin/env python3
"""An independent auditor of a rollstore log, written as another government system would.

It knows only the published contract: proto/rollstore/v1/rollstore.proto (compiled here, at run
time, with grpcio-tools) and the hash chain of DESIGN.md section 3:

    hash(0) = 32 zero bytes
    hash(n) = SHA-256(hash(n-1) || body(n))

It subscribes to the log from seq 1, recomputes the chain from each event's `body` as it
arrives, checks every stored `hash` and that seqs run 1, 2, 3, ... without a gap, and stops
once it has verified the head it read when it started. Exit status 0 only if all of it holds.

Usage: audit_chain.py --address 127.0.0.1:50051 [--proto-root proto] [--timeout 120]
"""

import argparse
import hashlib
import importlib
import os
import sys
import tempfile


def compile_stubs(proto_root: str, out: str) -> None:
    from grpc_tools import protoc
    import grpc_tools

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    source = os.path.join(proto_root, "rollstore", "v1", "rollstore.proto")
    status = protoc.main([
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        source,
    ])
    if status != 0:
        raise SystemExit(f"protoc failed on {source} (status {status})")
    # Make the generated package importable as rollstore.v1.
    for package in ("rollstore", os.path.join("rollstore", "v1")):
        open(os.path.join(out, package, "__init__.py"), "a").close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="host:port of a rollstore server")
    parser.add_argument("--proto-root", default="proto", help="the directory holding rollstore/v1/rollstore.proto")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to allow for the whole audit")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out:
        compile_stubs(args.proto_root, out)
        sys.path.insert(0, out)
        pb = importlib.import_module("rollstore.v1.rollstore_pb2")
        rpc = importlib.import_module("rollstore.v1.rollstore_pb2_grpc")
        import grpc

        with grpc.insecure_channel(args.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            audit = rpc.AuditLogStub(channel)
            head = audit.GetHead(pb.GetHeadRequest(), timeout=30)
            print(f"head: seq {head.seq}, hash {head.hash.hex()}")
            chain = bytes(32)
            expected = 1
            if head.seq > 0:
                stream = audit.Subscribe(pb.SubscribeRequest(from_seq=1), timeout=args.timeout)
                for message in stream:
                    event = message.event
                    if event.seq != expected:
                        print(f"FAIL: seq {event.seq} arrived where {expected} was expected")
                        return 1
                    chain = hashlib.sha256(chain + event.body).digest()
                    if chain != event.hash:
                        print(f"FAIL: event {event.seq}: stored hash {event.hash.hex()} != recomputed {chain.hex()}")
                        return 1
                    if event.seq == head.seq:
                        stream.cancel()
                        break
                    expected += 1
            if chain != head.hash:
                print(f"FAIL: the chain reaches {chain.hex()}, the head says {head.hash.hex()}")
                return 1
            answer = audit.VerifyChain(pb.VerifyChainRequest(), timeout=args.timeout)
            if not answer.ok:
                print(f"FAIL: the server's own VerifyChain reports seq {answer.first_bad_seq}: {answer.problem}")
                return 1
            if answer.verified_seq == head.seq and answer.verified_hash != chain:
                print(f"FAIL: the server's VerifyChain reaches {answer.verified_hash.hex()} at the head")
                return 1
            print(f"ok: {head.seq} events verified independently; head hash {chain.hex()}")
            return 0


if __name__ == "__main__":
    sys.exit(main())
