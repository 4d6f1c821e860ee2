"""The Python `kubernetes` client (PyPI) against basalt server: what a script written for upstream does.

Usage: kubernetes_client.py KUBECONFIG. Exits non-zero, naming the step, when something differs.
"""
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()
rbac = client.RbacAuthorizationV1Api()
ns = "python"

core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
names = [n.metadata.name for n in core.list_namespace().items]
assert ns in names and "kube-system" in names, names

# A watch started before the create sees it.
seen = []
def watcher():
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, timeout_seconds=10):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["object"].metadata.name == "py":
            w.stop()
t = threading.Thread(target=watcher)
t.start()

cm = core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"a": "b"}), data={"k": "v"}))
assert cm.metadata.uid and cm.metadata.resource_version, cm
t.join(15)
assert ("ADDED", "py") in seen, seen

patched = core.patch_namespaced_config_map("py", ns, {"data": {"k2": "v2"}})
assert patched.data == {"k": "v", "k2": "v2"}, patched.data
assert [c.metadata.name for c in core.list_namespaced_config_map(ns, label_selector="a=b").items] == ["py"]

dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1DeploymentSpec(
        replicas=2,
        selector=client.V1LabelSelector(match_labels={"app": "web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.27")]),
        ),
    ),
)
created = apps.create_namespaced_deployment(ns, dep)
assert created.spec.strategy.type == "RollingUpdate", created.spec.strategy
scale = apps.read_namespaced_deployment_scale("web", ns)
assert scale.spec.replicas == 2, scale
apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}})
assert apps.read_namespaced_deployment("web", ns).spec.replicas == 3

try:
    core.read_namespaced_config_map("missing", ns)
    raise SystemExit("reading a missing object must fail")
except ApiException as e:
    assert e.status == 404, e

try:
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name")))
    raise SystemExit("an invalid name must fail")
except ApiException as e:
    assert e.status == 422 and "metadata.name" in e.body, e.body

rbac.create_namespaced_role(ns, client.V1Role(metadata=client.V1ObjectMeta(name="r"), rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get"])]))
core.delete_namespaced_config_map("py", ns)
apps.delete_namespaced_deployment("web", ns)
core.delete_namespace(ns)
print("ok")
