"""The Kubernetes manifests, rendered offline with kustomize (built by scripts/lib.sh with `go install`:
HERALD_KUSTOMIZE) for each overlay, and checked against what the services really are: their settings, ports,
health routes, partitions and replica limits, and the restricted Pod Security Standard."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest

from herald_billing import rebuild as billing_rebuild
from herald_delivery import rebuild as delivery_rebuild
from herald_shared.settings import HeraldSettings
from herald_shared.topics import EVENT_TOPICS
from herald_subscriptions import rebuild as subscriptions_rebuild
from tests.unit.deploy.helpers import OVERLAYS, ROOT, UPGRADES, objects, rendered_upgrade

SERVICES = ("subscriptions", "campaigns", "delivery", "billing", "compliance")
SINGLE_REPLICA = {"campaigns", "billing", "delivery"}  # each service's README says why
# Every Deployment, with the service whose image and settings it runs: delivery's edge and subscriptions' API run
# with HERALD_RUN_CONSUMERS=false (HTTP, and delivery's inbound SMTP, only; their READMEs, "Processes").
DEPLOYMENTS = {**{s: s for s in SERVICES}, "delivery-edge": "delivery", "subscriptions-api": "subscriptions"}
# Every upgrade Job (deploy/k8s/upgrade) rebuilds a read model: the service it runs as, and its rebuild's module.
REBUILDS: dict[str, tuple[str, ModuleType]] = {"subscriptions-rebuild": ("subscriptions", subscriptions_rebuild),
                                               "delivery-rebuild": ("delivery", delivery_rebuild),
                                               "billing-rebuild": ("billing", billing_rebuild)}
# Settings a library reads from the environment rather than a service's settings class.
LIBRARY_SETTINGS = {"PROMETHEUS_DISABLE_CREATED_SERIES"}  # prometheus_client, at import
# A deleted pod is still sent requests until the ingress and kube-proxy learn of it, and SIGTERM closes its listener
# within 0.1 s (review R6, finding 3); the services' own stop had 30 s after SIGTERM before the preStop sleep came.
PRE_STOP_SLEEP_SECONDS = 5
SERVICE_STOP_SECONDS = 30
SETTINGS = {"subscriptions": "SubscriptionsSettings", "campaigns": "CampaignsSettings", "delivery": "DeliverySettings",
            "billing": "BillingSettings", "compliance": "ComplianceSettings"}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def consumes(deployment: dict[str, Any]) -> bool:
    """Whether its processes run consumers (all do, but those given HERALD_RUN_CONSUMERS=false)."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {"name": "HERALD_RUN_CONSUMERS", "value": "false"} not in container.get("env", [])


def env_names(settings_class: type[HeraldSettings]) -> set[str]:
    """The environment variables a settings class reads (its aliases, or field names in capitals)."""
    return {(field.alias or name).upper() for name, field in settings_class.model_fields.items()}


def assert_restricted(name: str, pod: dict[str, Any]) -> None:
    """The restricted Pod Security Standard, and a writable /tmp under a read-only root filesystem."""
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    assert pod["securityContext"]["runAsUser"] >= 10000, name
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
    assert pod["automountServiceAccountToken"] is False, name
    assert not pod.get("hostNetwork") and not pod.get("hostPID"), name
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert "add" not in context["capabilities"], name
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{name}: /tmp must be writable"


def policy_ports(policies: dict[str, dict[str, Any]], pod_labels: dict[str, str], direction: str) -> set[int]:
    """The ports the network policies selecting a pod of these labels open in one direction (ingress, egress)."""
    found = set()
    for policy in policies.values():
        spec = policy["spec"]
        selector = spec["podSelector"]
        matches = selects(selector.get("matchLabels", {}), pod_labels) or any(
            e["operator"] == "In" and pod_labels.get(e["key"]) in e["values"]
            for e in selector.get("matchExpressions", []))
        if matches and direction.capitalize() in spec["policyTypes"]:
            for rule in spec.get(direction, []):
                found |= {p["port"] for p in rule.get("ports", [])}
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_is_deployed_with_its_service_account_service_budget_and_monitor(overlay: str) -> None:
    deployments = objects(overlay, "Deployment")
    assert set(deployments) == set(DEPLOYMENTS)
    for name, deployment in deployments.items():
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] in objects(overlay, "ServiceAccount")
        service = objects(overlay, "Service")[name]
        assert selects(service["spec"]["selector"], pod_labels)
        assert selects(objects(overlay, "PodDisruptionBudget")[name]["spec"]["selector"]["matchLabels"], pod_labels)
        monitor = objects(overlay, "ServiceMonitor")[name]
        assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_meets_the_restricted_pod_security_standard(overlay: str) -> None:
    namespace = objects(overlay, "Namespace")["herald"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, deployment in objects(overlay, "Deployment").items():
        assert_restricted(name, deployment["spec"]["template"]["spec"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_resources_and_spreading(overlay: str) -> None:
    for name, deployment in objects(overlay, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == HeraldSettings.model_fields["http_port"].default, name
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, name
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, name
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz", name
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{name}: {kind}"
        keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, name
        image = container["image"]
        assert image.rsplit(":", 1)[0].endswith(f"herald/{DEPLOYMENTS[name]}") and ":" in image, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_respect_partitions_and_the_services_that_run_alone(overlay: str) -> None:
    partitions = min(t.partitions for t in EVENT_TOPICS)
    deployments = objects(overlay, "Deployment")
    for name, deployment in deployments.items():
        replicas = deployment["spec"]["replicas"]
        assert replicas >= 1, name
        if consumes(deployment):
            assert replicas <= partitions, f"{name}: replicas beyond {partitions} partitions sit idle"
        if name in SINGLE_REPLICA:
            assert replicas == 1, name
            # a rolling update would run two for a while
            assert deployment["spec"]["strategy"]["type"] == "Recreate", name
    # Autoscaled: exactly what consumes nothing (delivery's edge, subscriptions' API); the sender waits for
    # replicas that share work (issue 16), and the consumers' partitions bound the others.
    autoscalers = objects(overlay, "HorizontalPodAutoscaler")
    assert {a["spec"]["scaleTargetRef"]["name"] for a in autoscalers.values()} == {
        name for name, deployment in deployments.items() if not consumes(deployment)} == {
        "delivery-edge", "subscriptions-api"}
    for autoscaler in autoscalers.values():
        spec = autoscaler["spec"]
        target = deployments[spec["scaleTargetRef"]["name"]]
        assert spec["scaleTargetRef"]["kind"] == "Deployment" and not consumes(target)
        assert 2 <= spec["minReplicas"] == target["spec"]["replicas"] < spec["maxReplicas"]
        assert target["spec"]["strategy"]["type"] == "RollingUpdate"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_given_is_one_the_service_reads_and_secrets_are_only_referenced(overlay: str) -> None:
    config_maps = objects(overlay, "ConfigMap")
    assert not objects(overlay, "Secret"), "secret values never live in the manifests"
    for name, deployment in objects(overlay, "Deployment").items():
        service = DEPLOYMENTS[name]
        module = importlib.import_module(f"herald_{service}.main")
        known = env_names(getattr(module, SETTINGS[service]))
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        given = set()
        for source in container["envFrom"]:
            given |= set(config_maps[source["configMapRef"]["name"]]["data"])
        env = container.get("env", [])
        for variable in env:
            if "fieldRef" in variable.get("valueFrom", {}):  # the pod's own facts, only to compose a setting
                assert any(f"$({variable['name']})" in other.get("value", "") for other in env), variable
                continue
            given.add(variable["name"])
            if "valueFrom" in variable:
                assert set(variable["valueFrom"]) == {"secretKeyRef"}, variable
        unread = given - LIBRARY_SETTINGS - known
        assert not unread, f"{name} is given settings it does not read: {sorted(unread)}"
        assert "MONGODB_URL" in given and "KAFKA_BOOTSTRAP_SERVERS" in given, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_serving_traffic_serves_on_for_a_while_once_deleted_and_then_has_its_stop_time(
        overlay: str) -> None:
    services = objects(overlay, "Service")
    serving = set()
    for name, deployment in objects(overlay, "Deployment").items():
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        if not any(selects(service["spec"].get("selector", {}), pod_labels) for service in services.values()):
            continue
        serving.add(name)
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}, name
        # the preStop hook's time is taken from the grace period
        assert pod["terminationGracePeriodSeconds"] >= PRE_STOP_SLEEP_SECONDS + SERVICE_STOP_SECONDS, name
    assert serving == set(DEPLOYMENTS)  # each has its Service: the public routes, a staff API, /metrics


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pods_serve_no_created_series(overlay: str) -> None:
    """prometheus_client reads herald-common's value as switching its `*_created` series off (review R6, finding 5:
    14% of Herald's series, read by no alert or panel)."""
    value = objects(overlay, "ConfigMap")["herald-common"]["data"]["PROMETHEUS_DISABLE_CREATED_SERIES"]
    served = subprocess.run(
        [sys.executable, "-c", "import prometheus_client as p; p.Counter('herald_x', 'x').inc(); "
         "p.Histogram('herald_y_seconds', 'y').observe(1); print(p.generate_latest().decode())"],
        env={**os.environ, "PROMETHEUS_DISABLE_CREATED_SERIES": value}, capture_output=True, text=True, timeout=60,
        check=True).stdout
    assert "herald_x_total 1.0" in served and "herald_y_seconds_count 1.0" in served
    assert "_created" not in served


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_open_only_the_documented_flows(overlay: str) -> None:
    policies = objects(overlay, "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"} and not deny.get("ingress")
    deployments = objects(overlay, "Deployment")
    pods = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()}

    def ports(name: str, direction: str) -> set[int]:
        return policy_ports(policies, pods[name], direction)

    for name in DEPLOYMENTS:
        assert {53, 9092, 27017} <= ports(name, "egress"), name
        assert 8080 in ports(name, "ingress"), name  # scraped by Prometheus at least
    assert {25, 465, 587} <= ports("delivery", "egress")
    for name in ("subscriptions", "subscriptions-api", "delivery-edge"):
        assert not {25, 465, 587} & ports(name, "egress"), name  # only delivery's sender sends mail
    assert 2525 in ports("delivery-edge", "ingress") and 2525 not in ports("delivery", "ingress")
    public = policies["public-http"]["spec"]["podSelector"]["matchExpressions"][0]["values"]
    assert not {"compliance", "delivery", "subscriptions"} & set(public)  # the staff API, what consumes
    assert {"delivery-edge", "subscriptions-api", "campaigns", "billing"} <= set(public)
    # The sender's inbound SMTP server is off: the edge's Service is the MX's.
    [sender] = deployments["delivery"]["spec"]["template"]["spec"]["containers"]
    assert {"name": "HERALD_INBOUND_SMTP_PORT", "value": "0"} in sender["env"]
    assert {p["name"] for p in objects(overlay, "Service")["delivery-edge"]["spec"]["ports"]} == {"http", "smtp"}


def test_the_prod_overlay_names_the_kafka_cluster_the_topics_and_services_expect() -> None:
    kafka = objects("prod", "Kafka")["herald"]
    assert kafka["spec"]["entityOperator"]["topicOperator"]["watchedNamespace"] == "herald"
    topics = objects("prod", "KafkaTopic")
    assert {t["metadata"]["labels"]["strimzi.io/cluster"] for t in topics.values()} == {"herald"}
    assert {t["metadata"]["namespace"] for t in topics.values()} == {"herald"}
    bootstrap = objects("prod", "ConfigMap")["herald-common"]["data"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert bootstrap.startswith(f"{kafka['metadata']['name']}-kafka-bootstrap.{kafka['metadata']['namespace']}.")


def upgrade_job(name: str) -> dict[str, Any]:
    [job] = [o for o in rendered_upgrade(name) if o["kind"] == "Job"]
    return job


def test_the_upgrade_jobs_are_in_no_overlay_and_render_alone() -> None:
    """An operator applies an upgrade on purpose (deploy/k8s/README.md): never with the base or an overlay."""
    for overlay in OVERLAYS:
        assert not objects(overlay, "Job"), overlay
    assert sorted(p.name for p in (ROOT / "deploy/k8s/upgrade").iterdir()) == sorted(REBUILDS)
    for name in sorted({*UPGRADES, *REBUILDS}):
        assert [o["kind"] for o in rendered_upgrade(name)] == ["Job"], name
        assert upgrade_job(name)["metadata"]["namespace"] == "herald", name


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("upgrade", REBUILDS)
def test_the_rebuild_job_runs_like_the_service_beside_the_overlay(upgrade: str, overlay: str) -> None:
    """The Job's pod meets the restricted standard, runs as its service's service account with settings and
    Secrets the overlay has (and the rebuild reads), reaches Kafka and MongoDB through the overlay's network
    policies (and no SMTP relay), and is taken for none of the service's pods."""
    service = REBUILDS[upgrade][0]
    job = upgrade_job(upgrade)
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    pod = job["spec"]["template"]["spec"]
    assert_restricted(upgrade, pod)
    assert pod["serviceAccountName"] == service and service in objects(overlay, "ServiceAccount")
    [container] = pod["containers"]
    given = set()
    for source in container["envFrom"]:  # by the name the overlay renders: no kustomize hash to follow
        given |= set(objects(overlay, "ConfigMap")[source["configMapRef"]["name"]]["data"])
    secrets = {v["valueFrom"]["secretKeyRef"]["name"] for d in objects(overlay, "Deployment").values()
               for v in d["spec"]["template"]["spec"]["containers"][0].get("env", [])
               if "secretKeyRef" in v.get("valueFrom", {})}
    for variable in container["env"]:
        given.add(variable["name"])
        reference = variable.get("valueFrom", {}).get("secretKeyRef")
        if reference is None:  # the one plain value: the Kafka user it runs as, its service's
            assert variable == {"name": "HERALD_KAFKA_USERNAME", "value": service}, variable
        elif not reference.get("optional"):
            assert reference["name"] in secrets, variable
    # Where the overlay's brokers want a user, the Job authenticates as its service's Deployment does.
    deployment_env = {v["name"]: v for v in objects(overlay, "Deployment")[service]["spec"]["template"]["spec"][
        "containers"][0].get("env", [])}
    job_env = {v["name"]: v for v in container["env"]}
    for name in ("HERALD_KAFKA_USERNAME", "HERALD_KAFKA_PASSWORD"):
        if name in deployment_env:
            wanted = deployment_env[name]
            assert job_env[name].get("value") == wanted.get("value"), name
            if "valueFrom" in wanted:
                assert job_env[name]["valueFrom"]["secretKeyRef"]["name"] == wanted["valueFrom"]["secretKeyRef"][
                    "name"], name
    # `python -m herald_<service>.rebuild` reads the shared settings (HeraldSettings), nothing of its service's
    unread = given - LIBRARY_SETTINGS - env_names(HeraldSettings)
    assert not unread, sorted(unread)
    assert {"MONGODB_URL", "KAFKA_BOOTSTRAP_SERVERS"} <= given
    policies = objects(overlay, "NetworkPolicy")
    assert {53, 9092, 27017} <= policy_ports(policies, pod_labels, "egress")
    assert not {25, 465, 587} & policy_ports(policies, pod_labels, "egress")
    public = policies["public-http"]["spec"]["podSelector"]["matchExpressions"][0]["values"]
    assert pod_labels["app.kubernetes.io/name"] not in public
    for kind in ("Service", "PodDisruptionBudget", "ServiceMonitor"):
        for name, obj in objects(overlay, kind).items():
            selector = obj["spec"]["selector"]
            assert not selects(selector.get("matchLabels", selector), pod_labels), f"{kind} {name} selects the Job"


@pytest.mark.parametrize("upgrade", REBUILDS)
def test_the_rebuild_job_runs_the_rebuild_once_with_the_prod_image(upgrade: str) -> None:
    service, rebuild = REBUILDS[upgrade]
    job = upgrade_job(upgrade)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["python", "-m", rebuild.__name__]
    [prod] = objects("prod", "Deployment")[service]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == prod["image"], "the upgrade runs the version overlays/prod deploys"
    assert container["imagePullPolicy"] == "Always"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    assert pod["restartPolicy"] == "Never" and 0 <= spec["backoffLimit"] <= 3
    assert spec["activeDeadlineSeconds"] >= 6 * 3600 and spec["ttlSecondsAfterFinished"] >= 3600
    # a refusal (processes still consume) fails the Job at once: retried, it would be refused again
    fail = [r for r in spec["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail == [{"action": "FailJob", "onExitCodes": {
        "containerName": container["name"], "operator": "In", "values": [rebuild.REFUSED]}}]
