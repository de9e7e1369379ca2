"""The official Python client (`kubernetes` on PyPI) against svcnet, with objects built the way
everyday Python code builds them: models without `kind`/`api_version`, which the client sends as
bodies without type metadata (kube-apiserver fills them in from the URL). Run by
`tests/python_client.rs` with the cluster's kubeconfig as the only argument; exits non-zero, naming
the failing step, on any difference from kube-apiserver."""

import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
NS = "default"
LABELS = {"suite": "py"}


def step(name):
    print(f"step: {name}", flush=True)


def expect_status(fn, code, message):
    try:
        fn()
    except ApiException as e:
        assert e.status == code, f"status {e.status}, want {code}: {e.body}"
        assert message in e.body, f"message {e.body!r} lacks {message!r}"
        return
    raise AssertionError(f"expected HTTP {code} ({message})")


step("list to start watches from")
svc_rv = core.list_namespaced_service(NS, label_selector="suite=py").metadata.resource_version
pod_rv = core.list_namespaced_pod(NS, label_selector="suite=py").metadata.resource_version

step("create a Service built without kind")
svc = client.V1Service(
    metadata=client.V1ObjectMeta(name="py-svc", labels=LABELS),
    spec=client.V1ServiceSpec(selector={"app": "py"}, ports=[client.V1ServicePort(port=80, target_port=8080)]),
)
assert svc.kind is None and svc.api_version is None
created = core.create_namespaced_service(NS, svc)
assert (created.kind, created.api_version) == ("Service", "v1"), (created.kind, created.api_version)
assert created.spec.cluster_ip, "no ClusterIP allocated"

step("patch the Service")
patched = core.patch_namespaced_service("py-svc", NS, {"metadata": {"labels": {"patched": "yes"}}})
assert patched.metadata.labels["patched"] == "yes"

step("replace (PUT) the Service with a body without kind")
cur = core.read_namespaced_service("py-svc", NS)
put = client.V1Service(metadata=cur.metadata, spec=cur.spec)
put.spec.ports[0].target_port = 9090
replaced = core.replace_namespaced_service("py-svc", NS, put)
assert replaced.spec.ports[0].target_port == 9090, replaced.spec.ports

step("create a Pod built without kind, patch its labels")
pod = client.V1Pod(
    metadata=client.V1ObjectMeta(name="py-pod", labels={"suite": "py", "app": "py"}),
    spec=client.V1PodSpec(
        termination_grace_period_seconds=1,
        containers=[client.V1Container(name="main", image="busybox", command=["sleep", "60"])],
    ),
)
p = core.create_namespaced_pod(NS, pod)
assert (p.kind, p.api_version) == ("Pod", "v1")
p = core.patch_namespaced_pod("py-pod", NS, {"metadata": {"labels": {"patched": "yes"}}})
assert p.metadata.labels["patched"] == "yes"

step("a body naming another kind is refused as kube-apiserver refuses it")
expect_status(
    lambda: core.create_namespaced_service(
        NS, {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "wrong"}}
    ),
    400,
    'Pod in version \\"v1\\" cannot be handled as a Service: converting (v1.Pod) to (core.Service): unknown conversion',
)

step("delete both")
core.delete_namespaced_service("py-svc", NS)
core.delete_namespaced_pod("py-pod", NS, grace_period_seconds=0)


def events(fn, rv, want):
    seen = []
    w = watch.Watch()
    for ev in w.stream(fn, NS, label_selector="suite=py", resource_version=rv, timeout_seconds=20):
        seen.append((ev["type"], ev["object"].metadata.name, ev["object"].kind))
        if len(seen) == want:
            w.stop()
    return seen


step("watch the Services from before the create")
got = events(core.list_namespaced_service, svc_rv, 4)
assert [t for t, _, _ in got] == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"], got
assert all(n == "py-svc" and k == "Service" for _, n, k in got), got

step("watch the Pod from before the create")
got = events(core.list_namespaced_pod, pod_rv, 1)
assert got[0] == ("ADDED", "py-pod", "Pod"), got

print("python client: ok", flush=True)
