"""crowd.py - a crowd of stores reconnecting at once, none with a session
ticket: N mutual-TLS connections to the collector, CONCURRENCY at a time,
each a full handshake, GET /healthz answered 200, then closed. Prints one
line: "crowd N SECONDS P50_MS P99_MS" (the time for all of them, and each
connection's time from connect to its answer). For handshake_bench.sh.

    python3 crowd.py HOST PORT N CONCURRENCY CA CERT KEY
"""
import socket
import ssl
import sys
import threading
import time


def main():
    host, port, count, concurrency, ca, cert, key = sys.argv[1:8]
    port, count, concurrency = int(port), int(count), int(concurrency)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    ctx.check_hostname = False
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_TICKET  # every connection a full handshake
    lock = threading.Lock()
    left = [count]
    times = []
    errors = []

    def one():
        start = time.monotonic()
        with socket.create_connection((host, port), timeout=120) as raw:
            with ctx.wrap_socket(raw) as conn:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: collector\r\n"
                             b"Connection: close\r\n\r\n")
                answer = conn.recv(4096)
        if b" 200 " not in answer:
            raise RuntimeError("GET /healthz was not answered 200: %r" % answer[:80])
        return time.monotonic() - start

    def worker():
        while True:
            with lock:
                if left[0] == 0 or errors:
                    return
                left[0] -= 1
            try:
                took = one()
            except (OSError, RuntimeError) as err:
                with lock:
                    errors.append(str(err))
                return
            with lock:
                times.append(took)

    began = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    if errors:
        sys.exit("crowd: " + errors[0])
    times.sort()
    p50 = times[len(times) // 2] * 1000
    p99 = times[min(len(times) - 1, (len(times) * 99) // 100)] * 1000
    print("crowd %d %.3f %.1f %.1f" % (len(times), elapsed, p50, p99), flush=True)


if __name__ == "__main__":
    main()
