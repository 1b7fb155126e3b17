"""One unary gRPC call with Python's grpcio (grpc C-core) over a unix socket.

Usage: grpc_unix_call.py SOCKET METHOD REQUEST_HEX [AUTHORITY]

Without AUTHORITY the channel sends grpcio's own `:authority` for `unix:` targets (the
percent-encoded socket path since 1.57); with it, `grpc.default_authority` is set to it
("" included). The request and response are raw message bytes: no generated code.
Prints one JSON object: {"code": NAME, "details": TEXT, "response": HEX}.
"""

import json
import sys

import grpc


def main() -> None:
    socket, method, request_hex = sys.argv[1:4]
    options = []
    if len(sys.argv) > 4:
        options.append(("grpc.default_authority", sys.argv[4]))
    with grpc.insecure_channel(f"unix:{socket}", options=options) as channel:
        call = channel.unary_unary(method)
        try:
            response = call(bytes.fromhex(request_hex), timeout=20)
            result = {"code": "OK", "details": "", "response": response.hex()}
        except grpc.RpcError as err:
            result = {"code": err.code().name, "details": err.details() or "", "response": ""}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
