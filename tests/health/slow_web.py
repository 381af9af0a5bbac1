"""A web process that opens $PORT only after a delay (readiness tests)."""

import os
import socket
import sys
import time

time.sleep(float(sys.argv[1]))
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(os.environ["PORT"])))
server.listen()
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    conn.close()
