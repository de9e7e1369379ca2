"""Port-forward through the official Python client (the kubelet's channel protocol over WebSocket).

Usage: port_forward.py KUBECONFIG NAMESPACE POD PORT CLOSED_PORT
Forwards PORT (an HTTP server) and CLOSED_PORT (nothing listens) in one session, asks PORT for
/hello.txt, and prints what came back and the error each port reported.
"""
import sys

from kubernetes import client, config
from kubernetes.stream import portforward

kubeconfig, namespace, pod, port, closed = sys.argv[1:6]
port, closed = int(port), int(closed)
config.load_kube_config(kubeconfig)
api = client.CoreV1Api()
pf = portforward(
    api.connect_get_namespaced_pod_portforward, pod, namespace, ports=f"{port},{closed}"
)
sock = pf.socket(port)
sock.setblocking(True)
sock.settimeout(30)
sock.sendall(b"GET /hello.txt HTTP/1.0\r\nHost: pod\r\n\r\n")
answer = b""
while True:
    chunk = sock.recv(65536)
    if not chunk:
        break
    answer += chunk
sock.close()
print("answer:", answer.split(b"\r\n", 1)[0].decode(), "|", answer.split(b"\r\n\r\n", 1)[-1].decode().strip())
print("error on the open port:", pf.error(port))
print("error on the closed port:", pf.error(closed))
pf.close()
print("python port-forward: done")
