"""idle_connections.py - opens N mutual-TLS connections to the collector, each
sends GET /healthz and reads the answer, then all stay open, idle, until
stdin closes. Prints "open N" once they are. For handshake_bench.sh.

    python3 idle_connections.py HOST PORT N CA CERT KEY
"""
import socket
import ssl
import sys


def main():
    host, port, count, ca, cert, key = sys.argv[1:7]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    ctx.check_hostname = False
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    conns = []
    for _ in range(int(count)):
        conn = ctx.wrap_socket(socket.create_connection((host, int(port))))
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: collector\r\n\r\n")
        if b" 200 " not in conn.recv(4096):
            sys.exit("idle_connections: GET /healthz was not answered 200")
        conns.append(conn)
    print("open", len(conns), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
