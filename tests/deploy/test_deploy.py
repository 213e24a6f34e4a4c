#!/usr/bin/python3
"""Checks deploy/ (Kubernetes manifests, systemd units, Prometheus config and
rules) against the real programs, so a renamed flag, route, port, config key
or metric breaks this test instead of a deployment.

- Every YAML file parses; kustomization.yaml lists every manifest; every
  volume, ConfigMap, Secret key and env var a manifest refers to exists.
- Ports: the config's listen port is the container's "http" port, which the
  Services' targetPort uses; its ops_listen port is the "ops" port, which the
  probes, the scrape annotation, the scrape config's port name, the systemd
  unit's --ops-listen and the static scrape targets use.
- The ConfigMap's server JSON is accepted by a real semid-server, which then
  answers the Deployment's probe paths; the CronJob's script (run as it is,
  with paths pointed at a temp dir and the trainer config shrunk) trains,
  publishes and makes that server load the model through its admin reload;
  the README's roll-back (rename an old release into place) is seen by the
  watcher; every metric and label value the alert rules use appears in the
  server's /metrics afterwards.
- deploy/README.md's publish-by-hand and roll-back commands work as written.
- Flags in the manifests and units exist in `semid-server --help` /
  `semid-train --help`; the uid is the Dockerfile's.
- The Dockerfile: its build stage installs what `make deps-test` does, its
  runtime stage the package of every library the programs link; EXPOSE has
  --listen's port and --ops-listen's, the HEALTHCHECK asks the latter, and
  its command (run as it is, pointed at a live server's operations port)
  passes, and fails with no server; the
  documented `docker run --stop-timeout` outlasts the image config's
  shutdown_timeout_ms, and README.md shows the same docker commands.
- systemd-analyze verify accepts the units (binaries pointed at $SEMID_BIN);
  the socket units listen on the addresses of the server unit's --listen and
  --ops-listen, are named "main" and "ops" as the server takes them, and are
  the server unit's Sockets=; the server unit's ExecStart, given sockets as
  systemd passes them (in Sockets= order, with their FileDescriptorName),
  serves on them;
  the train unit's ExecStart lines publish a model when run in a temp dir,
  and the registry backup unit's write a backup that exports as the store
  does and keep the newest 14.
- The code-entropy alerts hold only while their tower encodes a minimum
  rate, enough rows over their `for` to judge (a structural check of the
  expression, and the README names the rate).
- The Grafana dashboard: a valid grid, every query on the data source and
  instance variables, every metric it uses exported (and every one exported
  on it or left out by name), every query run by promtool, some against the
  figures their panels promise.
- promtool checks the rules and the scrape config and runs alert unit
  tests: among them, a quiet tower and a synthetic check repeating one input
  fire no entropy alert.  It is $SEMID_PROMTOOL (default
  $SEMID_O/tools/promtool) when that file exists (`make deps-test` unpacks
  it there from Debian's prometheus package, which it does not install),
  else promtool on PATH; with neither the test skips.

Needs python3-yaml.  Loopback only; every wait is bounded.
"""
import copy
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

try:
    import yaml
except ImportError:
    sys.exit("tests/deploy/test_deploy.py needs PyYAML: apt-get install python3-yaml")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "server"))
import semid_testlib as tl  # noqa: E402

DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
BIN = os.path.abspath(tl.BIN)
SERVER = os.path.join(BIN, "semid-server")
TRAIN = os.path.join(BIN, "semid-train")
TOKEN = "deploy-test-token"


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def help_flags(prog):
    out = subprocess.run([prog, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=10).stdout.decode()
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", out))
    # "--adam-b1 / adam-b2 / adam-eps", "--view1 .. view6": the short forms
    for m in re.finditer(r"--([a-z][a-z0-9-]*)((?: / [a-z][a-z0-9-]*)+)", out):
        flags.update("--" + x.strip() for x in m.group(2).split("/")[1:])
    m = re.search(r"--view(\d) \.\. view(\d)", out)
    if m:
        flags.update("--view%d" % i for i in range(int(m.group(1)), int(m.group(2)) + 1))
    return flags


def flags_of(args):
    """--name from each '--name', '--name=value' in a list of words."""
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def k8s_docs():
    docs = []
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        for d in yaml.safe_load_all(read(path)):
            if d is not None:
                docs.append((os.path.basename(path), d))
    return docs


def find(docs, kind, name=None):
    got = [d for _, d in docs if d.get("kind") == kind and
           (name is None or d["metadata"]["name"] == name)]
    if len(got) != 1:
        raise AssertionError("expected one %s %s in deploy/k8s, found %d" % (kind, name, len(got)))
    return got[0]


def pod_spec(obj):
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def mount_path(obj, volume_name):
    c = pod_spec(obj)["containers"][0]
    paths = [m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] == volume_name]
    assert len(paths) == 1, (obj["metadata"]["name"], volume_name)
    return paths[0]


def volume(obj, name):
    vs = [v for v in pod_spec(obj)["volumes"] if v["name"] == name]
    assert len(vs) == 1, (obj["metadata"]["name"], name)
    return vs[0]


def env_value(container, name):
    for e in container.get("env", []):
        if e["name"] == name:
            return e.get("value")
    raise AssertionError("%s: no env %s" % (container["name"], name))


def systemd_unit(name):
    """-> {section: {key: [values]}} (no line continuations are used)."""
    out, sec = {}, None
    for line in read(os.path.join(DEPLOY, "systemd", name)).splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            sec = out.setdefault(line.strip("[]"), {})
            continue
        k, _, v = line.partition("=")
        sec.setdefault(k, []).append(v)
    return out


def systemd_unescape(cmd):
    return cmd.replace("$$", "\0").replace("%%", "%").replace("\0", "$")


def seconds(duration):
    """A Prometheus duration of one unit ("90s", "30m", "1h", "1d") in seconds."""
    m = re.fullmatch(r"(\d+)([smhd])", duration)
    assert m, duration
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def free_second():
    """Wait until the wall clock is in a new second: release names carry the
    UTC second, so two publishes must not share one."""
    t = int(time.time())
    while int(time.time()) == t:
        time.sleep(0.02)


GRAFANA = os.path.join(DEPLOY, "grafana", "semid.json")

# Metric families the dashboard leaves out, and why (deploy/README.md).
DASHBOARD_LEFT_OUT = {
    "process_virtual_memory_bytes": "address space reserved, far above what is used",
    "process_virtual_memory_max_bytes": "no sample while unlimited, the usual case",
    "process_threads": "set by the configuration (workers, OpenBLAS, libmicrohttpd)",
    "semid_log_lines_dropped_total": "the log's own health: SemidLogLinesDropped alerts on it",
}


def child(pid):
    """The first child of process @pid (host pids), or None."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = f.read().split()
        return int(kids[0]) if kids else None
    except OSError:
        return None


def dashboard():
    with open(GRAFANA) as f:
        return json.load(f)


def dashboard_queries(dash):
    """(where, PromQL, labels its legend uses) of every panel target,
    annotation and query variable of @dash; a variable's label_values(S, L)
    gives S and L."""
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append(("panel %r, query %s" % (p["title"], t["refId"]), t["expr"],
                        re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", ""))))
    for a in dash["annotations"]["list"]:
        out.append(("annotation %r" % a["name"], a["expr"],
                    re.findall(r"\{\{\s*(\w+)\s*\}\}", a.get("textFormat", ""))))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.*), *(\w+)\)", v["query"]["query"])
            out.append(("variable %r" % v["name"], m.group(1), [m.group(2)]))
    return out


def grafana_to_promql(expr):
    """@expr as Grafana sends it with every instance chosen and a 1m scrape
    interval ($__rate_interval is at least four of them)."""
    return expr.replace("$__rate_interval", "4m").replace("$instance", ".*")


class Deploy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = k8s_docs()
        cls.cm = find(cls.docs, "ConfigMap", "semid-server-config")
        cls.train_cm = find(cls.docs, "ConfigMap", "semid-train-config")
        cls.dep = find(cls.docs, "Deployment", "semid-server")
        cls.cron = find(cls.docs, "CronJob", "semid-train")
        cls.secret = find(cls.docs, "Secret", "semid-secrets")
        cls.config = json.loads(cls.cm["data"]["semid-server.json"])
        cls.train_config = json.loads(cls.train_cm["data"]["semid-train.json"])
        cls.container = pod_spec(cls.dep)["containers"][0]
        cls.train_container = pod_spec(cls.cron)["containers"][0]
        cls.script = cls.train_container["args"][0]
        cls.server_flags = help_flags(SERVER)
        cls.train_flags = help_flags(TRAIN)
        cls.port = int(cls.config["listen"].rpartition(":")[2])
        cls.ops_port = int(cls.config["ops_listen"].rpartition(":")[2])

    # --- static consistency -------------------------------------------------

    def test_every_yaml_parses_and_kustomization_lists_every_manifest(self):
        files = sorted(glob.glob(os.path.join(DEPLOY, "**", "*.y*ml"), recursive=True))
        self.assertGreaterEqual(len(files), 10)
        for path in files:
            docs = [d for d in yaml.safe_load_all(read(path)) if d is not None]
            self.assertTrue(docs, path)
        for name, d in self.docs:
            self.assertIn("apiVersion", d, name)
            if d["kind"] != "Kustomization":
                self.assertTrue(d["metadata"]["name"], name)
        kust = find(self.docs, "Kustomization")
        listed = set(kust["resources"])
        on_disk = {os.path.basename(p) for p in glob.glob(os.path.join(K8S, "*.yaml"))}
        self.assertEqual(listed, on_disk - {"kustomization.yaml"})
        image_names = {i["name"] for i in kust["images"]}
        for _, d in self.docs:
            if d["kind"] in ("Deployment", "CronJob"):
                for c in pod_spec(d)["containers"]:
                    self.assertIn(c["image"], image_names)

    def test_ports_probes_and_services_agree_with_the_config(self):
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.assertEqual(ports["http"], self.port)
        # probes and scrapes on the operations port, which answers while
        # clients hold every connection of the main one
        self.assertEqual(ports["ops"], self.ops_port)
        self.assertNotEqual(self.ops_port, self.port)
        for probe in ("readinessProbe", "livenessProbe"):
            self.assertEqual(self.container[probe]["httpGet"]["port"], "ops")
        self.assertEqual(self.container["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertEqual(self.container["livenessProbe"]["httpGet"]["path"], "/healthz")
        sel = self.dep["spec"]["selector"]["matchLabels"]
        self.assertEqual({k: self.dep["spec"]["template"]["metadata"]["labels"][k] for k in sel},
                         sel)
        services = [d for _, d in self.docs if d["kind"] == "Service"]
        self.assertEqual(len(services), 2)
        for svc in services:
            self.assertEqual(svc["spec"]["selector"], sel)
            for p in svc["spec"]["ports"]:
                tp = p["targetPort"]
                self.assertEqual(ports[tp] if isinstance(tp, str) else tp, self.port)
        headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
        self.assertEqual(len(headless), 1)
        self.assertEqual(env_value(self.train_container, "SEMID_RELOAD_SERVICE"),
                         headless[0]["metadata"]["name"])
        self.assertIn('":%d"' % self.port, self.script)  # the pods' port in the reload loop
        ann = self.dep["spec"]["template"]["metadata"]["annotations"]
        self.assertEqual(int(ann["prometheus.io/port"]), self.ops_port)
        self.assertEqual(ann["prometheus.io/path"], "/metrics")
        scrape = yaml.safe_load(read(os.path.join(DEPLOY, "prometheus", "scrape.yml")))
        for job in scrape["scrape_configs"]:
            for rl in job.get("relabel_configs", []):
                if rl.get("source_labels") == ["__meta_kubernetes_pod_container_port_name"]:
                    self.assertEqual(rl["regex"], "ops", job["job_name"])
            for sc in job.get("static_configs", []):
                for target in sc["targets"]:
                    self.assertEqual(int(target.rpartition(":")[2]), self.ops_port, target)
        hpa = find(self.docs, "HorizontalPodAutoscaler")
        self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"], self.dep["metadata"]["name"])
        self.assertEqual(find(self.docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
                         sel)
        # preStop pause + drain must fit in the grace period
        grace = pod_spec(self.dep)["terminationGracePeriodSeconds"]
        self.assertGreater(grace, self.config["shutdown_timeout_ms"] / 1000 + 5)

    def test_volumes_configmaps_and_secrets_resolve(self):
        claims = {d["metadata"]["name"] for _, d in self.docs if d["kind"] == "PersistentVolumeClaim"}
        secret_keys = set(self.secret["stringData"])
        cms = {d["metadata"]["name"]: d for _, d in self.docs if d["kind"] == "ConfigMap"}
        for obj in (self.dep, self.cron):
            spec = pod_spec(obj)
            names = {v["name"] for v in spec["volumes"]}
            for c in spec["containers"]:
                for m in c["volumeMounts"]:
                    self.assertIn(m["name"], names)
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        self.assertEqual(ref["name"], self.secret["metadata"]["name"])
                        self.assertIn(ref["key"], secret_keys)
            for v in spec["volumes"]:
                if "persistentVolumeClaim" in v:
                    self.assertIn(v["persistentVolumeClaim"]["claimName"], claims)
                if "configMap" in v:
                    self.assertIn(v["configMap"]["name"], cms)
        # server and trainer share one models volume, at the config's model dir
        model = self.config["model"]
        self.assertEqual(mount_path(self.dep, "models"), os.path.dirname(model))
        self.assertEqual(mount_path(self.cron, "models"), os.path.dirname(model))
        self.assertEqual(env_value(self.train_container, "SEMID_MODELS"), os.path.dirname(model))
        self.assertIn('"$models/model.safetensors"', self.script)
        self.assertEqual(os.path.basename(model), "model.safetensors")
        self.assertEqual(volume(self.dep, "models")["persistentVolumeClaim"]["claimName"],
                         volume(self.cron, "models")["persistentVolumeClaim"]["claimName"])
        self.assertEqual(env_value(self.train_container, "SEMID_DATA"),
                         mount_path(self.cron, "data"))
        # the files the programs are told to read are keys of the mounted ConfigMaps
        args = self.container["args"]
        conf = args[args.index("--config") + 1]
        self.assertEqual(os.path.dirname(conf), mount_path(self.dep, "config"))
        self.assertEqual(volume(self.dep, "config")["configMap"]["name"], "semid-server-config")
        self.assertIn(os.path.basename(conf), self.cm["data"])
        tconf = env_value(self.train_container, "SEMID_TRAIN_CONFIG")
        self.assertEqual(os.path.dirname(tconf), mount_path(self.cron, "train-config"))
        self.assertEqual(volume(self.cron, "train-config")["configMap"]["name"],
                         "semid-train-config")
        self.assertIn(os.path.basename(tconf), self.train_cm["data"])
        # the Dockerfile serves the same path
        self.assertIn('"--model", "%s"' % model, read(os.path.join(ROOT, "Dockerfile")))

    def test_security_context_matches_the_dockerfile_user(self):
        uid = int(re.search(r"--uid (\d+)", read(os.path.join(ROOT, "Dockerfile"))).group(1))
        for obj in (self.dep, self.cron):
            sc = pod_spec(obj)["securityContext"]
            self.assertEqual((sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]), (uid, uid, uid))
            self.assertTrue(sc["runAsNonRoot"])
            for c in pod_spec(obj)["containers"]:
                csc = c["securityContext"]
                self.assertFalse(csc["allowPrivilegeEscalation"])
                self.assertTrue(csc["readOnlyRootFilesystem"])
                self.assertEqual(csc["capabilities"]["drop"], ["ALL"])
                self.assertTrue(c["resources"]["requests"] and c["resources"]["limits"])
        # one encode worker (one OpenBLAS thread) per core of the limit: the
        # defaults follow the CPU quota the limit sets, so the ConfigMaps
        # leave workers and threads out, and the limit is whole cores
        self.assertNotIn("workers", self.config)
        self.assertNotIn("threads", self.train_config)
        for c in (self.container, self.train_container):
            cpu = c["resources"]["limits"]["cpu"]
            self.assertEqual(str(int(cpu)), str(cpu))
            self.assertEqual(c["resources"]["requests"]["cpu"], cpu)

    def test_dockerignore_leaves_out_what_git_does(self):
        """`COPY . .` sends the build context: without a .dockerignore that
        was .git, build/, demo/ and whatever the README's examples wrote, so
        any change there re-ran the image's whole test stage.  Every
        .gitignore entry is left out (in .dockerignore's syntax: a name from
        the context's root, **/ for one at any depth), and .git."""
        ignore = [ln.strip() for ln in read(os.path.join(ROOT, ".dockerignore")).splitlines()
                  if ln.strip() and not ln.startswith("#")]
        self.assertIn(".git", ignore)
        for ln in read(os.path.join(ROOT, ".gitignore")).splitlines():
            ln = ln.strip()
            if not ln or ln.startswith("#"):
                continue
            want = ln.strip("/") if ln.startswith("/") else "**/" + ln.rstrip("/")
            self.assertIn(want, ignore, ln)

    def test_docker_smoke_script(self):
        """deploy/docker-smoke.sh (run by hand: CI has no Docker daemon)
        checks an image as the Dockerfile runs it; held here to the
        Dockerfile's ports, uid, volume and model path, and to the server's
        drain line, so that it cannot drift from them unnoticed."""
        script = read(os.path.join(DEPLOY, "docker-smoke.sh"))
        docker = re.sub(r"\\\n", " ", read(os.path.join(ROOT, "Dockerfile")))
        runtime = re.split(r"^FROM ", docker, flags=re.M)[2]
        p = subprocess.run(["bash", "-n", os.path.join(DEPLOY, "docker-smoke.sh")],
                           capture_output=True, text=True)
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        self.assertTrue(os.access(os.path.join(DEPLOY, "docker-smoke.sh"), os.X_OK))
        exposed = re.search(r"^EXPOSE (.*)$", runtime, re.M).group(1).split()
        self.assertEqual(re.findall(r'-p "\$host::(\d+)"', script), exposed)
        for port in exposed:
            self.assertIn("docker port \"$name\" %s/tcp" % port, script)
        uid = re.search(r"useradd .*--uid (\d+)", runtime).group(1)
        self.assertIn('[ "$uid" = %s ]' % uid, script)
        volume = json.loads(re.search(r"^VOLUME (\[.*\])", runtime, re.M).group(1))
        self.assertEqual(volume, ["/var/lib/semid/models"])
        self.assertEqual(set(re.findall(r'"\$volume:([^"]+)"', script)), set(volume))
        cmd = json.loads(re.search(r"^CMD (\[.*\])", runtime, re.M).group(1))
        self.assertIn("--out %s" % cmd[cmd.index("--model") + 1], script)
        self.assertIn("--allow-empty", cmd)  # the script publishes after the start
        drained = re.search(r"grep -q '(event=shutdown msg=\"([^\"]+)\")'", script)
        self.assertIn('"shutdown", "%s"' % drained.group(2),
                      read(os.path.join(ROOT, "server", "main.c")))

    def test_dockerfile(self):
        text = re.sub(r"\\\n", " ", read(os.path.join(ROOT, "Dockerfile")))
        build, runtime = re.split(r"^FROM ", text, flags=re.M)[1:]

        def installs(stage):
            m = re.search(r"apt-get install -y --no-install-recommends ([^&]*)", stage)
            return set(m.group(1).split())

        mk = re.sub(r"\\\n", " ", read(os.path.join(ROOT, "Makefile")))
        deb = set(re.search(r"^DEB_PACKAGES :=(.*)$", mk, re.M).group(1).split())
        deb |= set(re.search(r"^DEB_PACKAGES_TEST := \$\(DEB_PACKAGES\)(.*)$", mk,
                             re.M).group(1).split())
        self.assertEqual(installs(build), deb, "build stage against make deps-test")
        if not os.environ.get("SEMID_SANITIZE"):  # sanitizer runtimes are not shipped
            libs = {}  # soname -> the paths dpkg may know it by
            for prog in ("semid", "semid-server", "semid-train"):
                path = os.path.join(BIN, prog)
                needed = re.findall(r"\(NEEDED\).*\[(.*)\]", subprocess.run(
                    ["readelf", "-d", path], stdout=subprocess.PIPE, text=True).stdout)
                found = dict(re.findall(r"^\s*(\S+) => (\S+)", subprocess.run(
                    ["ldd", path], stdout=subprocess.PIPE, text=True).stdout, re.M))
                for lib in needed:
                    # the path ldd names, or behind a symlink (alternatives),
                    # or that one under /lib (merged /usr)
                    real = os.path.realpath(found[lib])
                    libs[lib] = (found[lib], real, real.replace("/usr/lib/", "/lib/", 1))
            owners = dict((f, pkg.split(":")[0]) for pkg, f in re.findall(
                r"^(\S+): (\S+)$", subprocess.run(
                    ["dpkg", "-S"] + sorted({f for fs in libs.values() for f in fs}),
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout, re.M))
            for lib, files in sorted(libs.items()):
                pkg = next((owners[f] for f in files if f in owners), None)
                if pkg != "libc6":  # in every Debian image
                    with self.subTest(lib=lib):
                        self.assertIn(pkg, installs(runtime))
            # not linked: loaded (dlopen) when a PostgreSQL store is named
            self.assertIn("libpq5", installs(runtime))
        # EXPOSE: the server's --listen and --ops-listen; the health check
        # asks the operations port
        exposed = [int(p) for p in re.search(r"^EXPOSE (.*)$", runtime, re.M).group(1).split()]
        cmd = json.loads(re.search(r"^CMD (\[.*\])", runtime, re.M).group(1))
        listen = int(cmd[cmd.index("--listen") + 1].rpartition(":")[2])
        port = int(cmd[cmd.index("--ops-listen") + 1].rpartition(":")[2])
        self.assertEqual(cmd[cmd.index("--listen") + 1], "0.0.0.0:%d" % listen)
        self.assertEqual(cmd[cmd.index("--ops-listen") + 1], "0.0.0.0:%d" % port)
        self.assertEqual(exposed, [listen, port])
        self.assertEqual((listen, port), (self.port, self.ops_port))  # as the pods
        check = re.search(r"^HEALTHCHECK .*?\sCMD\s+(.*)$", runtime, re.M)
        self.assertIsNotNone(check, "the runtime image has a HEALTHCHECK")
        check = check.group(1)
        self.assertIn("127.0.0.1/%d" % port, check)
        # docker stop sends the signal the server drains on
        stopsig = re.search(r"^STOPSIGNAL (\S+)", runtime, re.M)
        self.assertEqual(stopsig.group(1) if stopsig else "SIGTERM", "SIGTERM")
        # docker's grace outlasts the drain of the config the image copies
        shutdown_ms = json.loads(read(os.path.join(ROOT, "config", "semid-server.json"))).get(
            "shutdown_timeout_ms", 10000)
        stop = re.search(r"^#\s+docker run .*--stop-timeout (\d+)", text, re.M)
        self.assertIsNotNone(stop, "the Dockerfile's docker run sets --stop-timeout")
        self.assertGreater(int(stop.group(1)), shutdown_ms / 1000)
        # the README shows the same commands, and how to change a key: CMD
        # in full (arguments replace it), then the flag
        readme = read(os.path.join(ROOT, "README.md"))
        for where, doc in (("README.md", readme), ("Dockerfile", text)):
            flat = re.sub(r"\s+", " ", re.sub(r"(?m)^#", "", doc))
            m = re.search(r"`\.\.\. semid ((?:--\S+ ?\S* ?)+?)--workers 8`", flat)
            with self.subTest(where=where):
                self.assertIsNotNone(m, "%s shows how to change a key" % where)
                self.assertEqual(m.group(1).split(), cmd)
        for line in re.findall(r"^#\s+(docker (?:build|run) .*)$", text, re.M):
            with self.subTest(line=line):
                self.assertTrue("    " + line + "\n" in readme, "README.md does not show it")
        # the health check, run as the image runs it (/bin/sh -c), against a server
        with tempfile.TemporaryDirectory(prefix="semid-docker-") as d:
            model = os.path.join(d, "model.safetensors")
            srv = tl.Server(["--model", model, "--allow-empty", "--registry", "none",
                             "--ops-listen", "127.0.0.1:0"], workdir=d)
            try:
                ops = int(re.search(r"event=listening .* ops_port=(\d+)", srv.log_text()).group(1))
                here = check.replace("127.0.0.1/%d" % port, "127.0.0.1/%d" % ops)
                p = subprocess.run(["sh", "-c", here], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, timeout=30)
                self.assertEqual(p.returncode, 0, p.stdout)
            finally:
                self.assertEqual(srv.stop(), 0)
            p = subprocess.run(["sh", "-c", here], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=30)
            self.assertNotEqual(p.returncode, 0, "the health check passes with no server")

    def test_the_semid_user_has_the_pods_uid_and_gid(self):
        # The Dockerfile's and deploy/README.md's (systemd) account commands,
        # run as they are against a scratch /etc (useradd --root), give the
        # user the uid and gid the pods run as: `useradd --system` alone
        # makes its group with a system gid (995 on Debian 12), not 10001.
        if os.geteuid() != 0:
            self.skipTest("useradd --root needs root")
        sc = pod_spec(self.dep)["securityContext"]
        want = (sc["runAsUser"], sc["runAsGroup"])
        docker = re.sub(r"\\\n", " ", read(os.path.join(ROOT, "Dockerfile")))
        guide = read(os.path.join(DEPLOY, "README.md"))
        for where, text in (("Dockerfile", docker), ("deploy/README.md", guide)):
            cmds = re.findall(r"\b((?:groupadd|useradd) [^&\n]*?)\s*(?:&&|\\|\n|$)", text)
            with self.subTest(where=where), tempfile.TemporaryDirectory() as root:
                self.assertTrue(cmds, "%s creates no user" % where)
                os.mkdir(os.path.join(root, "etc"))
                for name, line in (("passwd", "root:x:0:0:root:/root:/bin/bash"),
                                   ("group", "root:x:0:"), ("shadow", "root:*:19000:0:99999:7:::"),
                                   ("gshadow", "root:*::")):
                    with open(os.path.join(root, "etc", name), "w") as f:
                        f.write(line + "\n")
                if os.path.exists("/etc/login.defs"):
                    shutil.copy("/etc/login.defs", os.path.join(root, "etc"))
                for cmd in cmds:
                    words = cmd.split()
                    p = subprocess.run([words[0], "--root", root] + words[1:],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                    self.assertEqual(p.returncode, 0, "%s: %s" % (cmd, p.stdout))
                with open(os.path.join(root, "etc", "passwd")) as f:
                    user = [ln.split(":") for ln in f if ln.startswith("semid:")]
                self.assertEqual(len(user), 1, "%s makes no user semid" % where)
                self.assertEqual((int(user[0][2]), int(user[0][3])), want)

    def test_server_flags_exist(self):
        used = flags_of(self.container["args"])
        self.assertIn("--config", used)
        self.assertEqual(used - self.server_flags, set())
        unit = systemd_unit("semid-server.service")["Service"]
        used = flags_of(unit["ExecStart"][0].split())
        self.assertEqual(used - self.server_flags, set())
        self.assertIn("--allow-empty", used)

    def test_admin_token_not_on_the_command_line(self):
        """The admin token reaches the server through SEMID_ADMIN_TOKEN (from
        the Secret), not a flag every process list would show."""
        self.assertNotIn("admin-token", " ".join(self.container["args"]))
        env = {e["name"]: e for e in self.container["env"]}
        self.assertEqual(env["SEMID_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["key"],
                         "admin-token")

    def test_registry_flag(self):
        self.assertIn("--registry", self.server_flags)
        self.assertIn("--registry=$(SEMID_REGISTRY)", self.container["args"])

    def test_env_references_resolve(self):
        """$(NAME) in args is expanded by Kubernetes from the container's env;
        every such reference must be defined (else it stays literal), and no
        $$ may appear (Kubernetes would turn it into $)."""
        for c in (self.container, self.train_container):
            defined = {e["name"] for e in c.get("env", [])}
            text = "\n".join(c.get("command", []) + c.get("args", []))
            self.assertNotIn("$$", text)
            refs = set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", text))
            self.assertEqual(refs - defined, set(), c["name"])
        self.assertEqual(set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", self.script)), set())
        for var in set(re.findall(r"\$\{(SEMID_[A-Z_]+)", self.script)) - {"SEMID_RELOAD_HOSTS"}:
            env_value(self.train_container, var)

    def test_trainer_flags_exist(self):
        m = re.search(r"^\s*semid-train (.*?[^\\])$", self.script, re.M | re.S)
        used = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(1)))
        self.assertIn("--out", used)
        self.assertEqual(used - self.train_flags, set())
        unit = systemd_unit("semid-train.service")["Service"]
        used = flags_of(unit["ExecStart"][0].split())
        self.assertIn("--out", used)
        self.assertEqual(used - self.train_flags, set())

    def test_systemd_units(self):
        srv = systemd_unit("semid-server.service")["Service"]
        self.assertEqual(srv["KillSignal"], ["SIGTERM"])
        self.assertIn("-HUP $MAINPID", srv["ExecReload"][0])
        self.assertIn("ProtectSystem", srv)
        exec_args = srv["ExecStart"][0].split()
        model = exec_args[exec_args.index("--model") + 1]
        self.assertEqual(model, self.config["model"])
        self.assertIn(os.path.dirname(model), srv["ReadWritePaths"][0].split())
        listen = exec_args[exec_args.index("--listen") + 1]
        self.assertEqual(int(listen.rpartition(":")[2]), self.port)
        ops = exec_args[exec_args.index("--ops-listen") + 1]
        self.assertEqual(int(ops.rpartition(":")[2]), self.ops_port)
        # socket activation: the sockets systemd keeps open across restarts
        # are the flags' addresses, under the names the server takes
        sockets = ["semid-server.socket", "semid-server-ops.socket"]
        self.assertEqual(srv["Sockets"][0].split(), sockets)
        unit = systemd_unit("semid-server.service")["Unit"]
        self.assertEqual(unit["Requires"][0].split(), sockets)
        for name in sockets:
            self.assertIn(name, unit["After"][0].split())
        for name, addr, fdname in zip(sockets, (listen, ops), ("main", "ops")):
            with self.subTest(socket=name):
                sock = systemd_unit(name)
                self.assertEqual(sock["Socket"]["ListenStream"], [addr])
                self.assertEqual(sock["Socket"]["FileDescriptorName"], [fdname])
                self.assertEqual(sock["Socket"]["Service"], ["semid-server.service"])
                self.assertEqual(sock["Install"]["WantedBy"], ["sockets.target"])
        # the hardening lets the server run: no address family it needs is
        # taken away (it binds listen when run by hand with these flags)
        self.assertTrue({"AF_INET", "AF_INET6"} <= set(srv["RestrictAddressFamilies"][0].split()))
        # the admin token has a place off the command line and out of the
        # world-readable config: an optional environment file
        self.assertEqual(srv["EnvironmentFile"], ["-/etc/semid/semid-server.env"])
        self.assertNotIn("--admin-token", exec_args)
        # the unit's --config file is config/semid-server.json installed
        shutdown_ms = json.loads(read(os.path.join(ROOT, "config", "semid-server.json"))).get(
            "shutdown_timeout_ms", 10000)
        self.assertGreater(int(srv["TimeoutStopSec"][0]), shutdown_ms / 1000)
        tr = systemd_unit("semid-train.service")["Service"]
        self.assertEqual(tr["Type"], ["oneshot"])
        self.assertIn(os.path.dirname(model), tr["ReadWritePaths"][0].split())
        self.assertEqual(systemd_unit("semid-train.timer")["Timer"]["Unit"], ["semid-train.service"])
        bk = systemd_unit("semid-registry-backup.service")["Service"]
        self.assertEqual(bk["Type"], ["oneshot"])
        self.assertIn(os.path.dirname(model), bk["ReadWritePaths"][0].split())
        self.assertEqual(systemd_unit("semid-registry-backup.timer")["Timer"]["Unit"],
                         ["semid-registry-backup.service"])
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze not installed")
        with tempfile.TemporaryDirectory(prefix="semid-units-") as d:
            names = ["semid-server.service", "semid-server.socket", "semid-server-ops.socket",
                     "semid-train.service", "semid-train.timer",
                     "semid-registry-backup.service", "semid-registry-backup.timer"]
            for n in names:
                text = read(os.path.join(DEPLOY, "systemd", n)).replace("/usr/local/bin/", BIN + "/")
                with open(os.path.join(d, n), "w") as f:
                    f.write(text)
            p = subprocess.run(["systemd-analyze", "verify", "--man=no"] +
                               [os.path.join(d, n) for n in names],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
            out = p.stdout.decode()
            self.assertEqual((p.returncode, out), (0, ""))
        # The server's system-call filter lets through what it makes at start:
        # OpenBLAS's mbind(2) (in @resources, which the unit denied, so systemd
        # killed the server with SIGSYS before it logged a line), and, should a
        # denied call come anyway, answers EPERM rather than killing it.
        needed = {"mbind"}
        denied = set()
        for line in srv.get("SystemCallFilter", []):
            if line.startswith("~"):
                for group in line[1:].split():
                    p = subprocess.run(["systemd-analyze", "syscall-filter", group],
                                       stdout=subprocess.PIPE, text=True, timeout=30)
                    denied |= {w.strip() for w in p.stdout.splitlines()
                               if w.startswith("    ") and not w.strip().startswith("#")}
        self.assertTrue(denied, "no denied group resolved")
        self.assertEqual(needed & denied, set())
        self.assertEqual(srv.get("SystemCallErrorNumber"), ["EPERM"])

    def test_systemd_units_make_their_directories(self):
        """On a fresh host (deploy/README.md's useradd makes no home) only a
        unit's StateDirectory= makes the directories it needs: each one it
        may write (ReadWritePaths=, which systemd refuses to start a unit
        without), the server's model directory (a start that cannot watch it
        exits 2, which RestartPreventExitStatus= leaves down), the trainer's
        --out directory and the directories the train and backup units' shell
        lines cd into or publish in.  And every unit gives each directory it
        shares with another one mode: systemd sets a StateDirectory= to its
        unit's StateDirectoryMode= (0755 when unset) at every start, so the
        server's 0750 was made 0755 again by every night's training and
        backup."""
        modes = {}  # directory -> {unit: mode}
        for name in ("semid-server.service", "semid-train.service",
                     "semid-registry-backup.service"):
            with self.subTest(unit=name):
                svc = systemd_unit(name)["Service"]
                made = {"/var/lib/" + p for line in svc.get("StateDirectory", [])
                        for p in line.split()}
                self.assertTrue(made, "no StateDirectory=")
                mode = svc.get("StateDirectoryMode", ["0755"])[-1]
                for p in made:
                    modes.setdefault(p, {})[name] = mode
                needed = {p for line in svc.get("ReadWritePaths", []) for p in line.split()
                          if not p.startswith("-")}
                for cmd in svc["ExecStart"]:
                    cmd = systemd_unescape(cmd)
                    words = cmd.split()
                    for flag in ("--model", "--out", "--db", "-o"):
                        if flag in words:
                            path = words[words.index(flag) + 1]
                            if path.startswith("/"):
                                needed.add(os.path.dirname(path))
                    needed |= set(re.findall(r"\bcd (/\S+?);", cmd))
                    if name == "semid-server.service":
                        self.assertIn("--model", words)
                self.assertEqual(needed - made, set(), "needed but not made")
        for p, by in sorted(modes.items()):
            self.assertEqual(len(set(by.values())), 1, "%s: %s" % (p, by))

    def _train_unit_dirs(self, d):
        """/var/lib/semid (data generated) and /etc/semid (a tiny trainer
        config) made under @d, and the train unit's ExecStart lines pointed
        at them: (var dir, the lines)."""
        unit = systemd_unit("semid-train.service")["Service"]
        root = os.path.join(d, "var")
        etc = os.path.join(d, "etc")
        os.makedirs(os.path.join(root, "models", "releases"))
        os.makedirs(etc)
        self._gen_data(os.path.join(root, "data"))
        with open(os.path.join(etc, "semid-train.json"), "w") as f:
            json.dump(self._tiny_train_config(), f)
        cmds = []
        for cmd in unit["ExecStart"]:
            cmd = systemd_unescape(cmd).replace("/usr/local/bin/", BIN + "/")
            cmds.append(cmd.replace("/var/lib/semid", root).replace("/etc/semid", etc))
        return root, cmds

    def _run_unit_line(self, cmd):
        p = subprocess.run(["/bin/sh", "-c", cmd], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(p.returncode, 0, cmd + "\n" + p.stdout.decode())
        return p.stdout.decode()

    def test_systemd_train_unit_publishes(self):
        """Run the train unit's ExecStart lines in order, as systemd would,
        with /var/lib/semid and /etc/semid moved into a temp dir."""
        with tempfile.TemporaryDirectory(prefix="semid-unit-run-") as d:
            root, cmds = self._train_unit_dirs(d)
            for cmd in cmds:
                self._run_unit_line(cmd)
            models = os.path.join(root, "models")
            rels = glob.glob(os.path.join(models, "releases", "model-*.safetensors"))
            self.assertEqual(len(rels), 1)
            self.assertTrue(os.path.samefile(rels[0], os.path.join(models, "model.safetensors")))
            self.assertEqual(sorted(os.listdir(models)), ["model.safetensors", "releases"])
            self.assertEqual(os.listdir(os.path.join(models, "releases")),
                             [os.path.basename(rels[0])])

    def _stopped_holding_a_checkpoint(self, argv, env, written, pid_of):
        """Start @argv (a training of hours), wait until written(the
        trainer's pid) names the checkpoint it wrote, then stop (SIGSTOP)
        the trainer, pid_of(the started process's pid), so that it holds its
        lock but cannot write its checkpoint again: (the process, the
        trainer's pid, the checkpoint)."""
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 60
            while True:
                trainer = pid_of(proc.pid)
                ckpt = trainer and written(trainer)
                if ckpt:
                    break
                self.assertIsNone(proc.poll(), "ended before it wrote a checkpoint")
                self.assertLess(time.time(), deadline, "no checkpoint written")
                time.sleep(0.01)
            os.kill(trainer, signal.SIGSTOP)
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
        return proc, trainer, ckpt

    def _end_stopped(self, proc, trainer):
        """Go on with the stopped @trainer, then SIGTERM @proc (it passes the
        signal on): its output, once it has ended."""
        try:
            os.kill(trainer, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGTERM)
            return proc.communicate(timeout=60)[0].decode()
        finally:
            if proc.poll() is None:  # by their ids
                for pid in (trainer, proc.pid):
                    os.kill(pid, signal.SIGKILL)
                proc.wait()

    def test_systemd_train_unit_keeps_a_running_checkpoint(self):
        """The unit's publish step removed releases/candidate.safetensors.ckpt
        whoever had it: a run started by hand with the unit's --out once the
        unit's trainer had ended (its lock free again) lost its live
        checkpoint.  The step now removes it only under that run's lock:
        held (the run stopped here, so that it cannot write it again), the
        checkpoint and lock file stay, and the unit publishes its own model
        all the same."""
        with tempfile.TemporaryDirectory(prefix="semid-unit-run-") as d:
            root, cmds = self._train_unit_dirs(d)
            for cmd in cmds[:2]:  # train, inspect
                self._run_unit_line(cmd)
            train = cmds[0].split()
            self.assertEqual(train[0], TRAIN)
            out = train[train.index("--out") + 1]
            with open(train[train.index("--config") + 1]) as f:
                conf = json.load(f)
            slow = os.path.join(d, "slow.json")
            conf["epochs"] = 100000  # hours
            with open(slow, "w") as f:
                json.dump(conf, f)
            train[train.index("--config") + 1] = slow
            unit_ckpt = os.stat(out + ".ckpt").st_ino  # the unit's run's, until step 3

            def written(pid):  # its lock taken, the unit's checkpoint replaced
                try:
                    with open(out + ".lock") as f:
                        mine = f.read().startswith("%d " % pid)
                    return mine and os.stat(out + ".ckpt").st_ino != unit_ckpt and out + ".ckpt"
                except FileNotFoundError:
                    return None

            # the trainer's own signal handling: TERM to it ends it cleanly
            proc, trainer, ckpt = self._stopped_holding_a_checkpoint(
                train + ["--progress", "false"], None, written, lambda pid: pid)
            try:
                published = self._run_unit_line(cmds[2])
                self.assertTrue(os.path.exists(ckpt), published)
                self.assertTrue(os.path.exists(out + ".lock"))
            finally:
                log = self._end_stopped(proc, trainer)
            self.assertEqual(proc.returncode, 143, log)
            models = os.path.join(root, "models")
            rels = glob.glob(os.path.join(models, "releases", "model-*.safetensors"))
            self.assertEqual(len(rels), 1, published)
            self.assertTrue(os.path.samefile(rels[0], os.path.join(models, "model.safetensors")))

    def test_cronjob_start_keeps_a_running_jobs_checkpoint(self):
        """Each Job's start removed every releases/model-*.safetensors.ckpt:
        the checkpoints of runs killed before, but with them the live one
        of another Job still training (one made by hand beside the
        scheduled one: each has its own --out, so the trainer's lock does
        not keep them apart).  A start now removes a checkpoint, and a lock
        file, only when no trainer holds that model's lock: the running
        Job's (its trainer stopped here, so that it cannot write its
        checkpoint again) stays with its lock file; a killed run's goes, and
        so does a lock file a run killed long ago left alone; one made a
        moment ago, which a trainer starting may not have locked yet,
        stays."""
        with tempfile.TemporaryDirectory(prefix="semid-deploy-") as d:
            models, env = self._cronjob_dirs(d, 1)
            rel = os.path.join(models, "releases")
            os.makedirs(rel)
            with open(env["SEMID_TRAIN_CONFIG"]) as f:
                conf = json.load(f)
            conf["epochs"] = 100000  # hours: it must be stopped
            slow = os.path.join(d, "slow.json")
            with open(slow, "w") as f:
                json.dump(conf, f)
            killed = os.path.join(rel, "model-20261101T030000Z.safetensors")
            lone = os.path.join(rel, "model-20261102T030000Z.safetensors.lock")
            young = os.path.join(rel, "model-20261103T030000Z.safetensors.lock")
            night = time.time() - 86400  # left by runs killed on earlier nights
            for path, text in ((killed + ".ckpt", "stale"), (killed + ".lock", "4242 node-a\n"),
                               (lone, "4343 node-b\n"), (young, "")):
                with open(path, "w") as f:
                    f.write(text)
                if path != young:
                    os.utime(path, (night, night))

            def written(pid):  # a checkpoint not the killed run's
                mine = set(glob.glob(os.path.join(rel, "*.ckpt"))) - {killed + ".ckpt"}
                return mine.pop() if mine else None

            proc, trainer, ckpt = self._stopped_holding_a_checkpoint(
                ["/bin/bash", "-c", self.script], dict(env, SEMID_TRAIN_CONFIG=slow), written,
                child)
            try:
                free_second()  # the second Job's --out is its own
                # no pod to reload (a blank list: none asked)
                rc, out = self._run_cronjob(dict(env, SEMID_RELOAD_HOSTS=" "))
                self.assertEqual(rc, 0, out)
                self.assertIn("published", out)
                self.assertTrue(os.path.exists(ckpt), out)
                self.assertTrue(os.path.exists(ckpt[:-len(".ckpt")] + ".lock"), out)
            finally:
                log = self._end_stopped(proc, trainer)
            self.assertEqual(proc.returncode, 143, log)
            second = glob.glob(os.path.join(rel, "model-*.safetensors"))
            self.assertEqual(len(second), 1, out)
            # the killed runs' files gone, the first Job's own with its end
            self.assertEqual(sorted(os.listdir(rel)),
                             sorted(os.path.basename(f) for f in second + [young]))

    def test_systemd_registry_backup_unit(self):
        """Run the backup unit's ExecStart as systemd would, /var/lib/semid
        moved into a temp dir, against the store the server unit uses (the
        SQLite file beside its model): a checked copy that exports as the
        store does, and the newest 14 backups kept."""
        unit = systemd_unit("semid-registry-backup.service")["Service"]
        srv = systemd_unit("semid-server.service")["Service"]["ExecStart"][0].split()
        model = srv[srv.index("--model") + 1]
        with tempfile.TemporaryDirectory(prefix="semid-backup-unit-") as d:
            root = os.path.join(d, "var")
            models = os.path.dirname(model.replace("/var/lib/semid", root))
            os.makedirs(models)
            os.makedirs(os.path.join(root, "backups"))
            store = os.path.join(models, "semid-registry.db")
            ids = os.path.join(d, "ids.txt")
            x = os.path.join(d, "x.npy")
            m = os.path.join(models, "model.safetensors")
            tl.doc_model(m)  # an item tower of 4 inputs
            tl.np.save(x, tl.np.arange(200, dtype=tl.np.float32).reshape(50, 4) % 13)
            with open(ids, "w") as f:
                f.write("".join("sku-%d\n" % i for i in range(50)))
            subprocess.run([os.path.join(BIN, "semid"), "registry", "assign", "--model", m,
                            "--input", x, "--ids", ids, "-o", "/dev/null"], check=True,
                           timeout=30)
            old = ["registry-20260101T0000%02dZ.db" % i for i in range(15)]
            for n in old:
                with open(os.path.join(root, "backups", n), "w") as f:
                    f.write("older")
            for cmd in unit["ExecStart"]:
                cmd = systemd_unescape(cmd).replace("/usr/local/bin/", BIN + "/")
                cmd = cmd.replace("/var/lib/semid", root)
                p = subprocess.run(["/bin/sh", "-c", cmd], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=60)
                self.assertEqual(p.returncode, 0, cmd + "\n" + p.stdout.decode())
            kept = sorted(os.listdir(os.path.join(root, "backups")))
            self.assertEqual(len(kept), 14, kept)
            new = [n for n in kept if n not in old]
            self.assertEqual(len(new), 1, kept)
            self.assertEqual(kept[:13], old[-13:])

            def export(db):
                return subprocess.run([os.path.join(BIN, "semid"), "registry", "export",
                                       "--db", db], stdout=subprocess.PIPE, check=True,
                                      timeout=30).stdout
            self.assertEqual(export(os.path.join(root, "backups", new[0])), export(store))
            self.assertEqual(len(export(store).splitlines()), 51)

    def test_readme_restore_stops_the_sockets(self):
        """deploy/README.md's restore stops the socket units with the server:
        while a socket listens, a connection (a probe, the scrape) starts the
        server again, which opens the store the restore is to replace.  The
        units it names are the ones in systemd/, and it starts them again."""
        text = read(os.path.join(DEPLOY, "README.md"))
        part = text[text.index("## Back up and restore the registry"):]
        block = re.search(r"```sh\n(.*?)```", part, re.S).group(1)
        sockets = sorted(os.path.basename(p) for p in
                         glob.glob(os.path.join(DEPLOY, "systemd", "semid-server*.socket")))
        self.assertEqual(len(sockets), 2, sockets)
        lines = block.splitlines()
        restore = [i for i, ln in enumerate(lines) if "semid registry restore" in ln]
        self.assertEqual(len(restore), 1, block)
        stop = [ln.split() for ln in lines[:restore[0]] if ln.startswith("systemctl stop")]
        start = [ln.split() for ln in lines[restore[0]:] if ln.startswith("systemctl start")]
        self.assertEqual(len(stop), 1, block)
        self.assertEqual(len(start), 1, block)
        for cmd in stop + start:
            self.assertEqual(sorted(cmd[2:]), sorted(sockets + ["semid-server"]), cmd)

    def test_readme_checks_before_restart(self):
        """deploy/README.md's restart runs the server unit's ExecStart with
        --check-config first, as the unit runs it (its User, Group,
        EnvironmentFile and LimitNOFILE), and restarts only if that passes;
        that command, pointed at a temp dir, exits 0 for a good model, 0 and
        says so for a corrupt one (the unit's --allow-empty starts without
        it), 2 for a bad config value, and leaves the dir as it was."""
        text = read(os.path.join(DEPLOY, "README.md"))
        part = text[text.index("## Restart and upgrade"):]
        block = re.search(r"```sh\n(.*?)```", part, re.S).group(1)
        code = re.sub(r"\\\n\s*", " ", re.sub(r"#[^\n]*", "", block))
        run_cmd = re.search(r"systemd-run (.*?)&&\s*systemctl restart semid-server\s*$", code,
                            re.S)
        self.assertIsNotNone(run_cmd, block)
        words = run_cmd.group(1).split()
        unit = systemd_unit("semid-server.service")["Service"]
        exec_args = unit["ExecStart"][0].split()
        at = words.index(exec_args[0])
        self.assertEqual(words[at:], exec_args[:1] + ["--check-config"] + exec_args[1:])
        props = {w for w in words[:at] if "=" in w}
        self.assertIn("--uid=" + unit["User"][0], props)
        self.assertIn("--gid=" + unit["Group"][0], props)
        self.assertIn("EnvironmentFile=" + unit["EnvironmentFile"][0], props)
        self.assertIn("LimitNOFILE=" + unit["LimitNOFILE"][0], props)
        self.assertNotIn("ExecStartPre", unit)
        with tempfile.TemporaryDirectory(prefix="semid-check-") as d:
            model = os.path.join(d, "model.safetensors")
            tl.doc_model(model)
            cfg = os.path.join(d, "semid-server.json")
            shutil.copy(os.path.join(ROOT, "config", "semid-server.json"), cfg)
            args = [a.replace("/etc/semid/semid-server.json", cfg)
                    .replace("/var/lib/semid/models/model.safetensors", model)
                    .replace("0.0.0.0:", "127.0.0.1:") for a in words[at + 1:]]
            before = sorted(os.listdir(d))
            p = subprocess.run([os.path.join(BIN, "semid-server")] + args,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn(b'model_version "demo-1"', p.stdout)
            with open(model, "r+b") as f:
                f.write(b"\xff" * 8)
            p = subprocess.run([os.path.join(BIN, "semid-server")] + args,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)  # --allow-empty: it serves
            self.assertIn(b"not loaded", p.stdout)
            with open(cfg) as f:
                bad = json.load(f)
            bad["max_batch"] = 0
            with open(cfg, "w") as f:
                json.dump(bad, f)
            p = subprocess.run([os.path.join(BIN, "semid-server")] + args,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
            self.assertIn(b"max_batch = 0 is out of range", p.stderr)
            self.assertEqual(sorted(os.listdir(d)), before)

    def test_readme_commands(self):
        """deploy/README.md's publish-by-hand and roll-back commands, run in
        a temp models dir, leave model.safetensors a hard link of the right
        release; its kubectl override for a roll-back pod mounts the right
        claim at the right path as the right user."""
        text = read(os.path.join(DEPLOY, "README.md"))
        blocks = {}
        for sec in ("## Publish a model", "## Roll back"):
            part = text[text.index(sec):]
            blocks[sec] = re.search(r"```sh\n(.*?)```", part, re.S).group(1)
        with tempfile.TemporaryDirectory(prefix="semid-readme-") as d:
            models = os.path.join(d, "models")
            os.makedirs(os.path.join(models, "releases"))
            new = os.path.join(d, "new.safetensors")
            tl.doc_model(new)
            env = {"PATH": BIN + ":/usr/bin:/bin", "HOME": d}
            cmd = blocks["## Publish a model"].replace("/var/lib/semid/models", models)
            cmd = cmd.replace("/path/to/new.safetensors", new)
            p = subprocess.run(["/bin/bash", "-e", "-c", cmd], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
            self.assertEqual(p.returncode, 0, p.stdout.decode())
            rels = glob.glob(os.path.join(models, "releases", "model-*.safetensors"))
            self.assertEqual(len(rels), 1)
            self.assertTrue(os.path.samefile(rels[0], os.path.join(models, "model.safetensors")))
            # a file semid inspect refuses is not published, also when the
            # block is pasted into a shell that goes on after a failure
            served = os.stat(os.path.join(models, "model.safetensors"))
            with open(new, "wb") as f:
                f.write(b"not a model")
            p = subprocess.run(["/bin/bash", "-c", cmd], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
            self.assertNotEqual(p.returncode, 0, p.stdout.decode())
            self.assertEqual(os.stat(os.path.join(models, "model.safetensors")).st_ino,
                             served.st_ino, p.stdout.decode())
            cmd = blocks["## Roll back"].replace("/var/lib/semid/models", models)
            old = re.search(r"releases/(model-\w+\.safetensors)", cmd).group(1)
            with open(os.path.join(models, "releases", old), "wb") as f:
                f.write(b"the old release")
            p = subprocess.run(["/bin/bash", "-e", "-c", cmd], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
            self.assertEqual(p.returncode, 0, p.stdout.decode())
            self.assertTrue(os.path.samefile(os.path.join(models, "releases", old),
                                             os.path.join(models, "model.safetensors")))
            self.assertEqual(sorted(os.listdir(models)), ["model.safetensors", "releases"])
        over = json.loads(re.search(r"--overrides='(.*?)'", text, re.S).group(1))
        uid = pod_spec(self.dep)["securityContext"]["runAsUser"]
        self.assertEqual(over["spec"]["securityContext"]["runAsUser"], uid)
        c = over["spec"]["containers"][0]
        self.assertEqual(c["volumeMounts"][0]["mountPath"], mount_path(self.cron, "models"))
        self.assertEqual(over["spec"]["volumes"][0]["persistentVolumeClaim"],
                         volume(self.cron, "models")["persistentVolumeClaim"])
        img = find(self.docs, "Kustomization")["images"][0]
        self.assertEqual(c["image"], "%s:%s" % (img["newName"], img["newTag"]))

    # --- against a live server ------------------------------------------------

    def test_systemd_server_unit_runs_and_reloads_on_sighup(self):
        """The server unit's ExecStart (config/semid-server.json as the
        installed config, paths moved to a temp dir, loopback port 0 for its
        listen address) starts without a model, and its ExecReload signal
        loads one; ExecStop's SIGTERM exits 0."""
        unit = systemd_unit("semid-server.service")["Service"]
        argv = unit["ExecStart"][0].split()
        self.assertEqual(argv[0], "/usr/local/bin/semid-server")
        self.assertEqual(unit["ExecReload"], ["/bin/kill -HUP $MAINPID"])
        with tempfile.TemporaryDirectory(prefix="semid-unit-srv-") as d:
            args = [a.replace("/var/lib/semid", d).replace(
                "/etc/semid/semid-server.json", os.path.join(ROOT, "config", "semid-server.json"))
                for a in argv[1:]]
            args[args.index("--listen") + 1] = "127.0.0.1:0"
            args[args.index("--ops-listen") + 1] = "127.0.0.1:0"
            model = args[args.index("--model") + 1]
            os.makedirs(os.path.dirname(model))
            # the unit's EnvironmentFile, as the README says to write it
            env = {}
            with open(os.path.join(d, "semid-server.env"), "w") as f:
                f.write("SEMID_ADMIN_TOKEN=unit-token\n")
            with open(os.path.join(d, "semid-server.env")) as f:
                for line in f:
                    k, _, v = line.strip().partition("=")
                    env[k] = v
            srv = tl.Server(args + ["--watch=false", "--workers", "1"], workdir=d, env=env)
            try:
                self.assertEqual(srv.request("GET", "/readyz")[0], 503)
                tl.doc_model(model)
                srv.signal(signal.SIGHUP)
                deadline = time.monotonic() + 10
                while srv.request("GET", "/readyz")[0] != 200 and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.assertEqual(srv.json("GET", "/readyz")[2]["model_version"], "demo-1")
                # the installed config's "admin_token": "" leaves the file's token
                self.assertEqual(srv.request("POST", "/v1/admin/reload", headers={
                    "Authorization": "Bearer unit-token"})[0], 200)
                self.assertEqual(srv.request("POST", "/v1/admin/reload", headers={
                    "Authorization": "Bearer other"})[0], 403)
                self.assertEqual(srv.stop(), 0)
            finally:
                if srv.proc.poll() is None:
                    srv.kill()

    def test_systemd_sockets_activate_the_server_unit(self):
        """The server unit's ExecStart, started as systemd starts it with
        its Sockets= (listening sockets at fds 3 and 4, LISTEN_FDNAMES from
        each socket unit's FileDescriptorName; loopback port 0 for their
        ListenStream), serves the API and the operations port on them,
        whatever its --listen and --ops-listen say."""
        unit = systemd_unit("semid-server.service")["Service"]
        argv = unit["ExecStart"][0].split()
        socks, names = [], []
        for name in unit["Sockets"][0].split():
            sec = systemd_unit(name)["Socket"]
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            s.listen(int(sec.get("Backlog", ["128"])[0]))
            socks.append(s)
            names.append(sec["FileDescriptorName"][0])
        with tempfile.TemporaryDirectory(prefix="semid-unit-sock-") as d:
            args = [a.replace("/var/lib/semid", d).replace(
                "/etc/semid/semid-server.json", os.path.join(ROOT, "config", "semid-server.json"))
                for a in argv[1:]]
            os.makedirs(os.path.dirname(args[args.index("--model") + 1]))
            srv = tl.Server(args + ["--watch=false", "--workers", "1"], workdir=d,
                            inherit=(socks, names))
            try:
                ports = dict(zip(names, (s.getsockname()[1] for s in socks)))
                self.assertEqual(srv.port, ports["main"])
                self.assertIn("inherited=main,ops", srv.log_text())
                self.assertEqual(srv.request("GET", "/readyz")[0], 503)  # no model yet
                c = http.client.HTTPConnection("127.0.0.1", ports["ops"], timeout=10)
                c.request("GET", "/healthz")
                self.assertEqual(c.getresponse().status, 200)
                c.close()
                self.assertEqual(srv.stop(), 0)
            finally:
                if srv.proc.poll() is None:
                    srv.kill()
                for s in socks:
                    s.close()

    def _gen_data(self, data):
        p = subprocess.run([TRAIN, "gen", "--out", data, "--items", "300", "--users", "100",
                            "--interactions", "3000", "--dim", "8", "--seed", "7"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout.decode())

    def _tiny_train_config(self):
        """The ConfigMap's trainer config (every key must stay valid) with
        sizes small enough to train in about a second."""
        c = dict(self.train_config)
        c.update({"threads": 1, "codebook_size": 16, "latent_dim": 8, "hidden": [16],
                  "epochs": 3, "batch_size": 256})
        return c

    def _cronjob_dirs(self, d, port):
        """models/, data/ (generated) and a tiny trainer config under @d, and
        the CronJob's env pointed at them and at a server on @port."""
        models = os.path.join(d, "models")
        data = os.path.join(d, "data")
        os.makedirs(models, exist_ok=True)
        self._gen_data(data)
        tconf = os.path.join(d, "semid-train.json")
        with open(tconf, "w") as f:
            json.dump(self._tiny_train_config(), f)
        env = {"PATH": BIN + ":/usr/bin:/bin", "HOME": d}
        for e in self.train_container["env"]:
            env[e["name"]] = e.get("value", "")
        env.update({"SEMID_MODELS": models, "SEMID_DATA": data, "SEMID_TRAIN_CONFIG": tconf,
                    "SEMID_ADMIN_TOKEN": TOKEN, "SEMID_RELOAD_HOSTS": "127.0.0.1:%d" % port})
        return models, env

    def _run_cronjob(self, env):
        p = subprocess.run(["/bin/bash", "-c", self.script], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=90)
        return p.returncode, p.stdout.decode()

    def test_live_server_probes_publish_rollback_metrics(self):
        with tempfile.TemporaryDirectory(prefix="semid-deploy-") as d:
            conf = os.path.join(d, "semid-server.json")
            with open(conf, "w") as f:
                f.write(self.cm["data"]["semid-server.json"])
            models = os.path.join(d, "models")
            model = os.path.join(models, "model.safetensors")
            os.makedirs(models)  # the server watches it from the start
            # The ConfigMap as it is; only the addresses (Server adds --listen
            # 127.0.0.1:0), the model dir and the Secret's token are overridden.
            srv = tl.Server(["--config", conf, "--model", model, "--admin-token", TOKEN,
                             "--workers", "1", "--ops-listen", "127.0.0.1:0"], workdir=d)
            try:
                # the probes and the scrape ask the operations port
                ops = copy.copy(srv)
                ops.port = int(re.search(r"event=listening .* ops_port=(\d+)",
                                         srv.log_text()).group(1))
                live = self.container["livenessProbe"]["httpGet"]["path"]
                ready = self.container["readinessProbe"]["httpGet"]["path"]
                self.assertEqual(ops.request("GET", live)[0], 200)
                # allow_empty: up but not ready until the first publish
                self.assertEqual(ops.request("GET", ready)[0], 503)
                self.assertNotIn("semid_model_info{", ops.request("GET", "/metrics")[2].decode())

                models, env = self._cronjob_dirs(d, srv.port)
                rc, out = self._run_cronjob(env)
                self.assertEqual(rc, 0, out)
                self.assertIn("reload 127.0.0.1:%d: 200" % srv.port, out)
                self.assertIn("event=reload trigger=admin result=success", srv.log_text())
                st, _, body = ops.json("GET", ready)
                self.assertEqual(st, 200)
                v1 = body["model_version"]
                self.assertTrue(v1.startswith("das-"), v1)
                rels = sorted(glob.glob(os.path.join(models, "releases", "model-*.safetensors")))
                self.assertEqual(len(rels), 1)
                self.assertTrue(os.path.samefile(rels[0], model))
                self.assertFalse(glob.glob(os.path.join(models, "releases", "*.ckpt")))

                # a second publish, then roll back by renaming the first into place
                free_second()
                rc, out = self._run_cronjob(env)
                self.assertEqual(rc, 0, out)
                v2 = ops.json("GET", ready)[2]["model_version"]
                self.assertNotEqual(v2, v1)
                rels = sorted(glob.glob(os.path.join(models, "releases", "model-*.safetensors")))
                self.assertEqual(len(rels), 2)
                tmp = os.path.join(models, ".rollback.tmp")
                os.link(rels[0], tmp)
                os.rename(tmp, model)
                self._wait_version(ops, v1)

                # a reload that fails, and traffic, so every series exists
                tl.publish(model, b"not a model")
                self._wait_metric(ops, 'semid_model_reloads_total{result="error"}', 1)
                self.assertEqual(ops.json("GET", ready)[2]["model_version"], v1)
                st, _, body = srv.json("POST", "/v1/items:encode",
                                       {"inputs": [{"embedding": [0.1] * 8}] * 3})
                self.assertEqual(st, 200, body)
                st, _, body = srv.json("POST", "/v1/users:encode",
                                       {"inputs": [{"embedding": [0.2] * 8}]})
                self.assertEqual(st, 200, body)
                # a failing publish script run: the pod refuses (wrong token)
                self.assertEqual(srv.request("POST", "/v1/admin/reload",
                                             headers={"Authorization": "Bearer nope"})[0], 403)
                scrape = ops.request("GET", "/metrics")[2].decode()
                self._check_alert_metrics(scrape)
                self._check_dashboard_metrics(scrape)
                self.assertEqual(srv.stop(), 0)
            finally:
                if srv.proc.poll() is None:
                    srv.kill()

    def test_cronjob_sigterm_stops_the_trainer(self):
        """The pod's SIGTERM (the Job deleted, its deadline, a node drained)
        goes to the script's bash, PID 1 of the container: bash has no
        handler, so the kernel drops the signal (a process in a parent PID
        namespace, such as the container runtime, can signal a namespace's
        init only through a handler), and semid-train, never told, trained
        on until the SIGKILL after the grace period.  Not as PID 1, bash
        died and left the trainer running on, orphaned, to publish later.
        The script passes the signal on and waits for the trainer's clean
        stop: exit 143, nothing published, the trainer's own line, and no
        checkpoint or lock file left in releases/, its own or an earlier
        run's (the job never resumes one).  Run here
        as PID 1 of a new PID namespace (as root), and as a plain process."""
        for as_pid1 in (True, False):
            with self.subTest(pid1=as_pid1), \
                    tempfile.TemporaryDirectory(prefix="semid-deploy-") as d:
                models, env = self._cronjob_dirs(d, 1)
                with open(env["SEMID_TRAIN_CONFIG"]) as f:
                    conf = json.load(f)
                conf["epochs"] = 100000  # hours: it must be stopped
                with open(env["SEMID_TRAIN_CONFIG"], "w") as f:
                    json.dump(conf, f)
                # the checkpoint and lock file of a run killed on an earlier
                # night (OOM)
                stale = os.path.join(models, "releases", "model-20261101T030000Z.safetensors.ckpt")
                os.makedirs(os.path.dirname(stale))
                with open(stale, "wb") as f:
                    f.write(b"stale")
                with open(stale[:-len(".ckpt")] + ".lock", "w") as f:
                    f.write("4242 node-a\n")
                argv = ["/bin/bash", "-c", self.script]
                if as_pid1:
                    argv = ["unshare", "--pid", "--fork", "--mount-proc"] + argv
                    if subprocess.run(argv[:4] + ["true"]).returncode != 0:
                        self.skipTest("no PID namespace here (not root?)")
                proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
                bash = trainer = None
                try:
                    deadline = time.time() + 60
                    while set(glob.glob(os.path.join(models, "releases", "*.ckpt"))) <= {stale}:
                        self.assertLess(time.time(), deadline, "no checkpoint written")
                        time.sleep(0.01)
                    bash = child(proc.pid) if as_pid1 else proc.pid
                    trainer = child(bash)
                    os.kill(bash, signal.SIGTERM)
                    try:
                        out = proc.communicate(timeout=60)[0].decode()
                    except subprocess.TimeoutExpired:
                        self.fail("still running 60 s after the SIGTERM")
                finally:
                    if proc.poll() is None:  # by their ids: bash, as PID 1, takes
                        for pid in (trainer, bash):  # its namespace with it
                            if pid:
                                os.kill(pid, signal.SIGKILL)
                        proc.kill()
                        proc.wait()
                self.assertEqual(proc.returncode, 143, out)
                self.assertIn("semid-train: stopped by SIGTERM", out)
                self.assertNotIn("published", out.replace("nothing published", ""))
                self.assertFalse(os.path.exists(os.path.join(models, "model.safetensors")))
                # nor a checkpoint this job never resumes (a GB a night at 1M),
                # nor a lock file, its own or the killed run's
                self.assertEqual(os.listdir(os.path.join(models, "releases")), [])

    def test_cronjob_fails_when_a_pod_refuses(self):
        """The job must not report success when a pod did not take the model."""
        with tempfile.TemporaryDirectory(prefix="semid-deploy-") as d:
            os.makedirs(os.path.join(d, "models"))
            srv = tl.Server(["--model", os.path.join(d, "models", "model.safetensors"),
                             "--allow-empty", "--admin-token", "other-token", "--workers", "1"],
                            workdir=d)
            try:
                _, env = self._cronjob_dirs(d, srv.port)
                rc, out = self._run_cronjob(env)
                self.assertEqual(rc, 1, out)
                self.assertIn("reload 127.0.0.1:%d: 403" % srv.port, out)
            finally:
                srv.kill()

    def test_cronjob_reads_a_long_reload_answer(self):
        """The job takes the status from the first line of the answer.  Cut
        with `head -n 1` under `set -o pipefail`, the printf feeding it died
        of SIGPIPE whenever it still had lines to write after head had gone,
        and the job failed with 141 after publishing (seen once in CI with a
        short answer; a long one makes it certain).  A stand-in pod answers
        200 with many lines."""
        import socket
        import threading
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        body = "".join('{"line": %d, "pad": "%s"}\n' % (i, "x" * 60) for i in range(4000))

        def pod():
            c, _ = lsock.accept()
            with c:
                req = b""
                while b"\r\n\r\n" not in req:
                    req += c.recv(4096)
                c.sendall(("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                           "Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                           % (len(body), body)).encode())
        t = threading.Thread(target=pod, daemon=True)
        t.start()
        with tempfile.TemporaryDirectory(prefix="semid-deploy-") as d:
            _, env = self._cronjob_dirs(d, lsock.getsockname()[1])
            rc, out = self._run_cronjob(env)
        t.join(10)
        lsock.close()  # (its port is in the env the job ran with)
        self.assertEqual(rc, 0, out[-2000:])
        self.assertRegex(out, r"reload 127\.0\.0\.1:\d+: 200 ")

    def _wait_version(self, srv, version, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st, _, body = srv.json("GET", "/readyz")
            if st == 200 and body["model_version"] == version:
                return
            time.sleep(0.05)
        self.fail("server never served %s:\n%s" % (version, srv.log_text()[-2000:]))

    def _wait_metric(self, srv, series, at_least, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if srv.metrics().get(series, 0) >= at_least:
                return
            time.sleep(0.05)
        self.fail("%s never reached %s" % (series, at_least))

    def _check_alert_metrics(self, scrape):
        rules = yaml.safe_load(read(os.path.join(DEPLOY, "prometheus", "alerts.yml")))
        queries = [(rule["alert"], rule["expr"],
                    [label for label in re.findall(r"\$labels\.(\w+)",
                                                   json.dumps(rule.get("annotations")))])
                   for group in rules["groups"] for rule in group["rules"]]
        self.assertGreaterEqual(self._check_queries(scrape, queries), 6)

    def _check_dashboard_metrics(self, scrape):
        """Every query of the Grafana dashboard passes _check_queries, and
        every metric family the server exports is on it or in
        DASHBOARD_LEFT_OUT, so a new metric is either graphed or left out on
        purpose."""
        queries = dashboard_queries(dashboard())
        self._check_queries(scrape, queries)
        types = dict(re.findall(r"^# TYPE (\w+) (\w+)$", scrape, re.M))
        used = set()
        for _, expr, _ in queries:
            for name in re.findall(r"\b((?:semid|process)_[a-z_]+)", expr):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                used.add(base if types.get(base) == "histogram" else name)
        self.assertEqual(used - set(types), set())
        self.assertEqual(set(types) - used, set(DASHBOARD_LEFT_OUT))

    def _check_queries(self, scrape, queries):
        """@queries: (where, PromQL, labels its text uses).  Every metric a
        query names exists in @scrape, and every label matcher (except job and
        instance, which Prometheus adds) names a label the metric has, with a
        value that occurs (=) or a regex that matches one (=~); every label
        it groups or matches by, and every label its text uses, is a label of
        one of its metrics.  -> the number of metric selectors checked."""
        series = {}  # name -> list of {label: value}
        for line in scrape.splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ", line)
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            series.setdefault(m.group(1), []).append(labels)
        added = {"job", "instance"}
        used = 0
        for where, expr, text_labels in queries:
            names = re.findall(r"\b((?:semid|process)_[a-z_]+)", expr)
            for name, sel in re.findall(r"\b((?:semid|process)_[a-z_]+)(?:\{([^}]*)\})?",
                                        expr):
                used += 1
                self.assertTrue(name in series, "%s: %s is not in /metrics" % (where, name))
                for label, op, value in re.findall(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"', sel):
                    if label in added:
                        continue
                    values = [s.get(label) for s in series[name] if label in s]
                    self.assertTrue(values, "%s: %s has no label %s" % (where, name, label))
                    if label == "code":  # a status need not have been answered yet
                        self.assertTrue(re.fullmatch(r"[1-5]\d\d|[1-5]\.\.", value), value)
                    elif op == "=":
                        self.assertIn(value, values, "%s: %s" % (where, name))
                    elif op == "=~":
                        self.assertTrue(any(re.fullmatch(value, v) for v in values),
                                        "%s: %s{%s=~%r}" % (where, name, label, value))
            grouped = [label.strip() for clause in
                       re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr)
                       for label in clause.split(",")]
            for label in grouped + list(text_labels):
                if label in added:
                    continue
                self.assertTrue(any(label in s for n in names for s in series[n]),
                                "%s: %s uses label %s" % (where, expr, label))
        return used

    # --- the entropy alerts judge enough rows ----------------------------------

    # The fewest rows a tower must encode while an entropy alert waits (its
    # `for`) for the alert to judge anything: a synthetic check or a retry
    # loop sending one input every few seconds (entropy 0, nothing wrong
    # with the model) stays well under it.
    ENTROPY_MIN_ROWS = 1000

    def test_entropy_alerts_need_traffic(self):
        """semid_code_entropy_bits covers a tower's last entropy_window rows,
        however old, so under a trickle it is computed from a few rows, often
        one input sent again and again, and is near 0 with nothing wrong.
        Every rule on it must hold only while that tower (same job, instance,
        tower) encodes at a recent rate that amounts to ENTROPY_MIN_ROWS over
        the rule's `for`; deploy/README.md's alert table names that rate.  The
        rules used to ask only `rate(semid_encoded_total[15m]) > 0`.  (With
        promtool, test_promtool also runs the rules on such traffic.)"""
        rules = [r for g in yaml.safe_load(read(os.path.join(DEPLOY, "prometheus",
                                                                "alerts.yml")))["groups"]
                 for r in g["rules"] if "semid_code_entropy_bits" in r["expr"]]
        self.assertEqual({r["alert"] for r in rules},
                         {"SemidCodeEntropyCollapse", "SemidCodeEntropyDrop"})
        readme = read(os.path.join(DEPLOY, "README.md"))
        for rule in rules:
            expr = " ".join(rule["expr"].split())
            m = re.search(r" and on \(job, instance, tower\) rate\(semid_encoded_total"
                          r"\{job=\"semid\"\}\[(\d+[smh])\]\) (>=|>) ([0-9.]+)$", expr)
            self.assertTrue(m, "%s: no minimum encode rate of its tower: %s"
                            % (rule["alert"], expr))
            window, rate = seconds(m.group(1)), float(m.group(3))
            self.assertGreaterEqual(rate * seconds(rule["for"]), self.ENTROPY_MIN_ROWS,
                                    "%s: %s rows/s over %s" % (rule["alert"], rate, rule["for"]))
            self.assertLessEqual(window, seconds(rule["for"]), rule["alert"])
            row = [line for line in readme.splitlines()
                   if line.startswith("| `%s`" % rule["alert"])]
            self.assertEqual(len(row), 1, rule["alert"])
            self.assertIn("at least %g row/s" % rate, row[0])

    # --- the Grafana dashboard ----------------------------------------------

    def test_grafana_dashboard(self):
        """deploy/grafana/semid.json imports as it is: panels on the 24-column
        grid without overlaps, unique panel ids and refIds, every query on the
        ${datasource} variable, and every metric selector narrowed to
        job="semid" and the instances picked (a query without them would mix
        in other jobs or ignore the picker).  Its queries are checked against
        a live /metrics by test_live_server_probes_publish_rollback_metrics
        and run by promtool in test_promtool_dashboard."""
        dash = dashboard()
        self.assertEqual((dash["uid"], dash["title"]), ("semid", "semid"))
        ds = {"type": "prometheus", "uid": "${datasource}"}
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        self.assertEqual(set(variables), {"datasource", "instance"})
        self.assertEqual((variables["datasource"]["type"], variables["datasource"]["query"]),
                         ("datasource", "prometheus"))
        self.assertEqual(variables["instance"]["datasource"], ds)
        self.assertTrue(variables["instance"]["multi"] and variables["instance"]["includeAll"])
        self.assertEqual(variables["instance"]["allValue"], ".*")
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        taken = {}
        for p in dash["panels"]:
            g = p["gridPos"]
            self.assertTrue(g["x"] >= 0 and g["y"] >= 0 and g["w"] > 0 and g["h"] > 0 and
                            g["x"] + g["w"] <= 24, p["title"])
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    self.assertNotIn((x, y), taken, "%r overlaps %r" % (p["title"],
                                                                       taken.get((x, y))))
                    taken[x, y] = p["title"]
            if p["type"] == "row":
                continue
            self.assertEqual(p["datasource"], ds, p["title"])
            self.assertTrue(p["description"], p["title"])
            refs = [t["refId"] for t in p["targets"]]
            self.assertTrue(refs, p["title"])
            self.assertEqual(len(refs), len(set(refs)), p["title"])
            for t in p["targets"]:
                self.assertEqual(t["datasource"], ds, p["title"])
        for a in dash["annotations"]["list"]:
            self.assertEqual(a["datasource"], ds, a["name"])
        for where, expr, _ in dashboard_queries(dash):
            for name, sel in re.findall(r"\b((?:semid|process)_[a-z_]+)(?:\{([^}]*)\})?", expr):
                matchers = re.findall(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"', sel)
                self.assertIn(("job", "=", "semid"), matchers, "%s: %s" % (where, name))
                if not where.startswith("variable"):
                    self.assertIn(("instance", "=~", "$instance"), matchers,
                                  "%s: %s" % (where, name))
        # deploy/README.md names the file, and every metric of its table of
        # queries is on the dashboard
        readme = read(os.path.join(DEPLOY, "README.md"))
        self.assertIn("`grafana/semid.json`", readme)
        table = readme[readme.index("Queries worth a dashboard"):readme.index("The dashboard `grafana")]
        on_it = {n for _, expr, _ in dashboard_queries(dash)
                 for n in re.findall(r"\b((?:semid|process)_[a-z_]+)", expr)}
        for name in set(re.findall(r"\b((?:semid|process)_[a-z_]+)", table)):
            self.assertIn(name, on_it)
        for name, why in DASHBOARD_LEFT_OUT.items():
            self.assertIn(name, readme)

    def test_promtool_dashboard(self):
        """promtool accepts every dashboard query (as Grafana sends it) and
        gives the figures a panel promises on made-up series of two instances:
        'a' answers 2 requests/s with 200 and 1 with 503, 'b' 1 with 200 and
        1 lookup with 501 (--registry none)."""
        promtool = tl.find_promtool()
        if not promtool:
            self.skipTest("no promtool (see test_promtool)")
        dash = dashboard()
        queries = {}
        for p in dash["panels"]:
            for t in p.get("targets", []):
                queries[p["title"], t["refId"]] = grafana_to_promql(t["expr"])
        for a in dash["annotations"]["list"]:
            queries[a["name"], "annotation"] = grafana_to_promql(a["expr"])
        a = 'job="semid",instance="a:8080"'
        b = 'job="semid",instance="b:8080"'
        enc = 'route="/v1/items:encode"'
        series = [
            ('semid_requests_total{%s,%s,code="200"}' % (a, enc), "0+120x40"),
            ('semid_requests_total{%s,%s,code="503"}' % (a, enc), "0+60x40"),
            ('semid_requests_total{%s,%s,code="200"}' % (b, enc), "0+60x40"),
            # 'b' runs with --registry none: the lookups sent to it are 501,
            # no failure, and no part of the 5xx share either
            ('semid_requests_total{%s,route="/v1/items/{id}",code="501"}' % b, "0+60x40"),
            # the probes' and scrapes' own requests, 503s among them (no
            # model): not the callers', so no part of the 5xx share
            ('semid_requests_total{%s,route="/readyz",code="503"}' % a, "0+240x40"),
            ('semid_requests_total{%s,route="/metrics",code="200"}' % a, "0+480x40"),
            # 'a': every request in (0.25 s, 0.5 s]: p50 0.375 s
            ('semid_request_duration_seconds_bucket{%s,%s,le="0.25"}' % (a, enc), "0x40"),
            ('semid_request_duration_seconds_bucket{%s,%s,le="0.5"}' % (a, enc), "0+180x40"),
            ('semid_request_duration_seconds_bucket{%s,%s,le="+Inf"}' % (a, enc), "0+180x40"),
            # 'a': 60 batches a minute of 16 rows
            ("semid_batch_size_sum{%s}" % a, "0+960x40"),
            ("semid_batch_size_count{%s}" % a, "0+60x40"),
            # 'a': half its descriptors open, restarted once at minute 10;
            # its model loaded at 60 s
            ("process_open_fds{%s}" % a, "512x40"),
            ("process_max_fds{%s}" % a, "1024x40"),
            ("process_start_time_seconds{%s}" % a, "100x10 700x30"),
            ("semid_model_loaded_timestamp_seconds{%s}" % a, "60x40"),
            ('semid_model_info{%s,version="v1",sha256="x"}' % a, "1x40"),
            # 'a': 950 of 1000 rows admitted, 124 of 248 connections (a
            # connection_limit lowered at start), 256 MiB of 1 GiB held
            ("semid_queue_rows{%s}" % a, "950x40"),
            ("semid_queue_rows_limit{%s}" % a, "1000x40"),
            ("semid_connections_open{%s}" % a, "124x40"),
            ("semid_connections_limit{%s}" % a, "248x40"),
            ("semid_request_body_bytes{%s}" % a, "268435456x40"),
            ("semid_request_body_limit_bytes{%s}" % a, "1073741824x40"),
        ]
        inst_a = '{instance="a:8080"}'
        expect = [
            (("5xx share", "A"), "20m", [("{}", 0.25)]),
            (("Requests by route and status", "A"), "20m",
             [('{code="200",route="/metrics"}', 8),
              ('{code="200",route="/v1/items:encode"}', 3),
              ('{code="501",route="/v1/items/{id}"}', 1),
              ('{code="503",route="/readyz"}', 4),
              ('{code="503",route="/v1/items:encode"}', 1)]),
            (("Latency by route, p50 and p99", "B"), "20m",
             [('{route="/v1/items:encode"}', 0.375)]),
            (("Mean batch size", "A"), "20m", [(inst_a, 16)]),
            (("Open files against the limit, restarts", "A"), "20m",
             [('{job="semid",instance="a:8080"}', 0.5)]),
            (("Open files against the limit, restarts", "B"), "30m",
             [('{job="semid",instance="a:8080"}', 1)]),
            (("Model served", "B"), "10m", [(inst_a, 540)]),
            (("Model served", "A"), "10m", [('{instance="a:8080",sha256="x",version="v1"}', 1)]),
            (("Saturation: queue, connections, request bodies", "A"), "20m", [(inst_a, 0.95)]),
            (("Saturation: queue, connections, request bodies", "B"), "20m", [(inst_a, 0.5)]),
            (("Saturation: queue, connections, request bodies", "C"), "20m", [(inst_a, 0.25)]),
        ]
        with tempfile.TemporaryDirectory(prefix="semid-prom-") as d:
            rules = os.path.join(d, "dashboard.yml")
            with open(rules, "w") as f:
                yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
                    {"record": "semid_dashboard:q%d" % i, "expr": q}
                    for i, q in enumerate(queries.values())]}]}, f)
            p = subprocess.run([promtool, "check", "rules", rules], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
            self.assertEqual(p.returncode, 0, p.stdout.decode())
            tests = os.path.join(d, "dashboard_test.yml")
            with open(tests, "w") as f:
                yaml.safe_dump({"rule_files": ["dashboard.yml"], "evaluation_interval": "1m",
                                "tests": [{
                                    "interval": "1m",
                                    "input_series": [{"series": s, "values": v}
                                                     for s, v in series],
                                    "promql_expr_test": [
                                        {"expr": queries[key], "eval_time": at,
                                         "exp_samples": [{"labels": labels, "value": value}
                                                         for labels, value in samples]}
                                        for key, at, samples in expect]}]}, f)
            p = subprocess.run([promtool, "test", "rules", tests], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
            self.assertEqual(p.returncode, 0, p.stdout.decode())

    # --- promtool -------------------------------------------------------------

    def test_promtool(self):
        promtool = tl.find_promtool()
        if not promtool:
            self.skipTest("no promtool ($SEMID_PROMTOOL, which `make deps-test` unpacks from "
                          "Debian's prometheus package, nor on PATH); rules checked only by "
                          "the live-metrics and structural tests")
        prom = os.path.join(DEPLOY, "prometheus")
        p = subprocess.run([promtool, "check", "rules", os.path.join(prom, "alerts.yml")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout.decode())
        with tempfile.TemporaryDirectory(prefix="semid-prom-") as d:
            shutil.copy(os.path.join(prom, "alerts.yml"), d)
            conf = yaml.safe_load(read(os.path.join(prom, "scrape.yml")))
            self.assertEqual(conf["rule_files"], ["alerts.yml"])
            jobs = {j["job_name"] for j in conf["scrape_configs"]}
            self.assertIn("semid", jobs)
            path = os.path.join(d, "scrape.yml")
            with open(path, "w") as f:
                yaml.safe_dump(conf, f)
            p = subprocess.run([promtool, "check", "config", path], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
            out = p.stdout.decode()
            if p.returncode != 0 and "kubernetes_sd_configs not found" in out:
                # Debian builds Prometheus without Kubernetes discovery: check
                # the rest of the file
                conf["scrape_configs"] = [j for j in conf["scrape_configs"]
                                          if "kubernetes_sd_configs" not in j]
                with open(path, "w") as f:
                    yaml.safe_dump(conf, f)
                p = subprocess.run([promtool, "check", "config", path], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=30)
                out = p.stdout.decode()
            self.assertEqual(p.returncode, 0, out)
            # alert unit tests: each alert fires on the series that should
            # fire it, and not on healthy ones
            # (annotations left out: promtool compares them verbatim;
            # `check rules` above validated their templates)
            rules = yaml.safe_load(read(os.path.join(prom, "alerts.yml")))
            for group in rules["groups"]:
                for rule in group["rules"]:
                    rule.pop("annotations", None)
            with open(os.path.join(d, "alerts_bare.yml"), "w") as f:
                yaml.safe_dump(rules, f)
            tests = os.path.join(d, "alerts_test.yml")
            with open(tests, "w") as f:
                yaml.safe_dump(self._promtool_tests("alerts_bare.yml"), f)
            p = subprocess.run([promtool, "test", "rules", tests], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
            self.assertEqual(p.returncode, 0, p.stdout.decode())

    def _promtool_tests(self, rule_file):
        inst = 'job="semid",instance="a:8080"'
        healthy = 'job="semid",instance="b:8080"'
        low = 'job="semid",instance="d:8080"'
        probe = 'job="semid",instance="e:8080"'
        refused = 'job="semid",instance="f:8080"'
        series = [
            {"series": "up{%s}" % inst, "values": "1x60"},
            {"series": "up{%s}" % healthy, "values": "1x60"},
            {"series": 'up{job="semid",instance="c:8080"}', "values": "0x60"},
            {"series": 'semid_model_info{%s,version="v1",sha256="x"}' % healthy,
             "values": "1x60"},
            # 'f': serving, a publish refused at minute 10 (the counter rose
            # once, then stood still), a good one served at minute 40; 'a':
            # no model at all (SemidNoModelLoaded's, not this one's)
            {"series": "up{%s}" % refused, "values": "1x60"},
            {"series": 'semid_model_info{%s,version="v1",sha256="x"}' % refused,
             "values": "1x60"},
            {"series": "semid_model_last_reload_successful{%s}" % refused,
             "values": "1x10 0x30 1x20"},
            {"series": 'semid_model_reloads_total{%s,result="error"}' % refused,
             "values": "0x10 1x50"},
            {"series": "semid_model_last_reload_successful{%s}" % inst, "values": "0x60"},
            {"series": "semid_model_last_reload_successful{%s}" % healthy, "values": "1x60"},
            # 'a': every request 5xx and slow (all in the 10 s bucket)
            {"series": 'semid_requests_total{%s,route="/v1/items:encode",code="503"}' % inst,
             "values": "0+60x60"},
            {"series": 'semid_request_duration_seconds_bucket{%s,route="/v1/items:encode",'
                       'le="0.05"}' % inst, "values": "0x60"},
            {"series": 'semid_request_duration_seconds_bucket{%s,route="/v1/items:encode",'
                       'le="10"}' % inst, "values": "0+60x60"},
            {"series": 'semid_request_duration_seconds_bucket{%s,route="/v1/items:encode",'
                       'le="+Inf"}' % inst, "values": "0+60x60"},
            # 'a': encoding 2 rows/s, level 0 collapsed
            {"series": 'semid_encoded_total{%s,tower="item"}' % inst, "values": "0+120x60"},
            {"series": 'semid_code_entropy_bits{%s,tower="item",level="0"}' % inst,
             "values": "0.5x60"},
            {"series": 'semid_code_entropy_bits{%s,tower="item",level="1"}' % inst,
             "values": "5x60"},
            # 'd': half a row a second (a quiet tower: few rows judged), and
            # 'e': a synthetic check encoding one fixed input every 10 s;
            # both under 1 bit, neither may fire
            {"series": 'semid_encoded_total{%s,tower="item"}' % low, "values": "0+30x60"},
            {"series": 'semid_code_entropy_bits{%s,tower="item",level="0"}' % low,
             "values": "0.8x60"},
            {"series": 'semid_encoded_total{%s,tower="user"}' % probe, "values": "0+6x60"},
            {"series": 'semid_code_entropy_bits{%s,tower="user",level="0"}' % probe,
             "values": "0x60"},
            # 'a': its registry down from minute 10, waits running out, a full lock table
            {"series": "semid_registry_up{%s}" % inst, "values": "1x10 0x50"},
            {"series": "semid_registry_up{%s}" % healthy, "values": "1x60"},
            {"series": 'semid_registry_timeouts_total{%s,reason="no_answer"}' % inst,
             "values": "0x10 2x50"},
            {"series": 'semid_registry_timeouts_total{%s,reason="busy"}' % healthy,
             "values": "0x60"},
            {"series": 'semid_registry_global_lock_total{%s,reason="lock_table_full"}' % inst,
             "values": "0x10 1x50"},
            # 'a': one 500 at minute 20 (a damaged registry entry met); 'b': none
            {"series": 'semid_requests_total{%s,route="/v1/items/{id}",code="500"}' % inst,
             "values": "0x20 1x40"},
            {"series": 'semid_requests_total{%s,route="/v1/items/{id}",code="500"}' % healthy,
             "values": "0x60"},
            # 'a': 900 of its 1000 descriptors from minute 10; 'b': 65536 and
            # 'd': 1024 with a connection_limit's worth held (72 %)
            {"series": "process_open_fds{%s}" % inst, "values": "100x10 900x50"},
            {"series": "process_max_fds{%s}" % inst, "values": "1000x60"},
            {"series": "process_open_fds{%s}" % healthy, "values": "1100x60"},
            {"series": "process_max_fds{%s}" % healthy, "values": "65536x60"},
            {"series": "process_open_fds{%s}" % low, "values": "740x60"},
            {"series": "process_max_fds{%s}" % low, "values": "1024x60"},
            # 'a': 40 log lines dropped at minute 30 (its journald stalled);
            # 'b': none
            {"series": "semid_log_lines_dropped_total{%s}" % inst, "values": "0x30 40x30"},
            {"series": "semid_log_lines_dropped_total{%s}" % healthy, "values": "0x60"},
            # saturation against the limits each server exports: 'a' full
            # from minute 10 (950 of 1000 rows, 240 of a connection_limit
            # lowered to 248, 1000 of 1024 MiB); 'b' the same 240
            # connections against 1024 (a fixed threshold could not tell
            # the two apart) and half its queue and bodies; 'd' full for 2
            # minutes at minute 20 (a burst, not saturation)
        ] + [
            {"series": "%s{%s}" % (name, who), "values": values}
            for who, rows, conns, conn_limit, body in (
                (inst, "100x10 950x50", "20x10 240x50", "248x60", "0x10 1048576000x50"),
                (healthy, "500x60", "240x60", "1024x60", "536870912x60"),
                (low, "100x20 1000x2 100x38", "20x20 248x2 20x38", "248x60",
                 "0x20 1073741824x2 0x38"))
            for name, values in (("semid_queue_rows", rows), ("semid_queue_rows_limit", "1000x60"),
                                 ("semid_connections_open", conns),
                                 ("semid_connections_limit", conn_limit),
                                 ("semid_request_body_bytes", body),
                                 ("semid_request_body_limit_bytes", "1073741824x60"))
        ]
        a = {"job": "semid", "instance": "a:8080"}
        f = {"job": "semid", "instance": "f:8080"}

        def registryless(failed):
            """'a' on --registry none: 1000 encodes a minute (@failed of
            them 503), 300 400s, 900 registry calls answered 501."""
            return [{"series": 'semid_requests_total{%s,route="%s",code="%s"}'
                               % (inst, route, code), "values": "0+%dx60" % n}
                    for route, code, n in (("/v1/items:encode", "200", 1000 - failed),
                                           ("/v1/items:encode", "503", failed),
                                           ("/v1/items:encode", "400", 300),
                                           ("/v1/items/{id}", "501", 600),
                                           ("/v1/items:assign", "501", 300)) if n]
        low_l = {"job": "semid", "instance": "d:8080"}
        tight = 'job="semid",instance="c:8080"'
        return {
            "rule_files": [rule_file],
            "evaluation_interval": "1m",
            "tests": [{
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "SemidDown",
                     "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "semid",
                                                    "instance": "c:8080"}}]},
                    {"eval_time": "10m", "alertname": "SemidNoModelLoaded",
                     "exp_alerts": [{"exp_labels": dict(a, severity="critical")}]},
                    {"eval_time": "5m", "alertname": "SemidModelReloadFailing", "exp_alerts": []},
                    {"eval_time": "15m", "alertname": "SemidModelReloadFailing",
                     "exp_alerts": [{"exp_labels": dict(f, severity="warning")}]},
                    # 25 minutes after the refusal, the file still not served
                    {"eval_time": "35m", "alertname": "SemidModelReloadFailing",
                     "exp_alerts": [{"exp_labels": dict(f, severity="warning")}]},
                    {"eval_time": "45m", "alertname": "SemidModelReloadFailing", "exp_alerts": []},
                    {"eval_time": "30m", "alertname": "SemidHighP99Latency",
                     "exp_alerts": [{"exp_labels": {"severity": "warning", "job": "semid",
                                                    "route": "/v1/items:encode"}}]},
                    {"eval_time": "30m", "alertname": "SemidHighErrorRate",
                     "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "semid"}}]},
                    {"eval_time": "50m", "alertname": "SemidCodeEntropyCollapse",
                     "exp_alerts": [{"exp_labels": dict(a, severity="warning", tower="item",
                                                        level="0")}]},
                    {"eval_time": "13m", "alertname": "SemidRegistryDown", "exp_alerts": []},
                    {"eval_time": "16m", "alertname": "SemidRegistryDown",
                     "exp_alerts": [{"exp_labels": dict(a, severity="warning")}]},
                    {"eval_time": "5m", "alertname": "SemidRegistryTimeouts", "exp_alerts": []},
                    {"eval_time": "15m", "alertname": "SemidRegistryTimeouts",
                     "exp_alerts": [{"exp_labels": dict(a, severity="warning",
                                                        reason="no_answer")}]},
                    {"eval_time": "15m", "alertname": "SemidRegistryLockTableFull",
                     "exp_alerts": [{"exp_labels": dict(a, severity="warning",
                                                        reason="lock_table_full")}]},
                    {"eval_time": "19m", "alertname": "SemidInternalErrors", "exp_alerts": []},
                    {"eval_time": "21m", "alertname": "SemidInternalErrors",
                     "exp_alerts": [{"exp_labels": dict(a, severity="warning",
                                                        route="/v1/items/{id}")}]},
                    {"eval_time": "40m", "alertname": "SemidInternalErrors", "exp_alerts": []},
                    {"eval_time": "13m", "alertname": "SemidFileDescriptorsNearLimit",
                     "exp_alerts": []},
                    {"eval_time": "16m", "alertname": "SemidFileDescriptorsNearLimit",
                     "exp_alerts": [{"exp_labels": dict(a, severity="warning")}]},
                    {"eval_time": "29m", "alertname": "SemidLogLinesDropped", "exp_alerts": []},
                    {"eval_time": "31m", "alertname": "SemidLogLinesDropped",
                     "exp_alerts": [{"exp_labels": dict(a, severity="warning")}]},
                    {"eval_time": "50m", "alertname": "SemidLogLinesDropped", "exp_alerts": []},
                ] + [
                    check
                    for name in ("SemidQueueNearFull", "SemidConnectionsNearLimit",
                                 "SemidRequestBodyMemoryNearLimit")
                    for check in (
                        {"eval_time": "13m", "alertname": name, "exp_alerts": []},
                        {"eval_time": "16m", "alertname": name,
                         "exp_alerts": [{"exp_labels": dict(a, severity="warning")}]},
                        # 'd''s two full minutes fire nothing
                        {"eval_time": "22m", "alertname": name,
                         "exp_alerts": [{"exp_labels": dict(a, severity="warning")}]},
                        {"eval_time": "26m", "alertname": name,
                         "exp_alerts": [{"exp_labels": dict(a, severity="warning")}]})
                ],
            }, {
                # a fleet run with --registry none whose clients also send
                # it registry calls, answered 501 (a choice, not a failure):
                # 1000 encodes a minute, 300 400s, and 900 lookups and
                # assigns, all 501; in the first test none of the encodes
                # fails (with the 501s counted it paged: 41 %), in the
                # second 15 of them are 503s, 1.2 % of the 1300 requests it
                # serves (with the 501s in the ratio's whole, 0.7 %: no
                # page)
                "interval": "1m",
                "input_series": registryless(0),
                "alert_rule_test": [
                    {"eval_time": "30m", "alertname": "SemidHighErrorRate", "exp_alerts": []},
                ],
            }, {
                "interval": "1m",
                "input_series": registryless(15),
                "alert_rule_test": [
                    {"eval_time": "30m", "alertname": "SemidHighErrorRate",
                     "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "semid"}}]},
                ],
            }, {
                # a day at 5 bits, then 2 (under two thirds) for 2 h: 'a'
                # encodes 2 rows/s, 'd' half a row a second
                "interval": "1m",
                "input_series": [
                    {"series": 'semid_encoded_total{%s,tower="item"}' % inst,
                     "values": "0+120x1560"},
                    {"series": 'semid_code_entropy_bits{%s,tower="item",level="0"}' % inst,
                     "values": "5x1440 2x120"},
                    {"series": 'semid_encoded_total{%s,tower="item"}' % low,
                     "values": "0+30x1560"},
                    {"series": 'semid_code_entropy_bits{%s,tower="item",level="0"}' % low,
                     "values": "5x1440 2x120"},
                ],
                "alert_rule_test": [
                    {"eval_time": "24h50m", "alertname": "SemidCodeEntropyDrop",
                     "exp_alerts": []},
                    {"eval_time": "26h", "alertname": "SemidCodeEntropyDrop",
                     "exp_alerts": [{"exp_labels": dict(a, severity="info", tower="item",
                                                        level="0")}]},
                ],
            }, {
                # the registry's disk (100 GB): 'a' fills at 20 MB a minute
                # from 25 GB free (under 20% from minute 251, empty within a
                # day at that rate), 'b' stays at half, 'd' at 4%, and 'e' at
                # 15% without filling (low, but not going anywhere); on a
                # 30 MB volume 'f' is full (0, then 500 KB) from minute 10 to
                # 19, and for one minute at 60 (a file written and moved at
                # once); 'c', on 8 MiB, has 2 MiB: little, but not full
                "interval": "1m",
                "input_series": [
                    {"series": "semid_registry_filesystem_%s_bytes{%s}" % (what, who),
                     "values": values}
                    for who, avail, size in (
                        (inst, "25000000000-20000000x400", "100000000000x400"),
                        (healthy, "50000000000x400", "100000000000x400"),
                        (low, "4000000000x400", "100000000000x400"),
                        (probe, "15000000000x400", "100000000000x400"),
                        (refused, "9000000x9 0x4 500000x4 9000000x40 0 9000000x340",
                         "30000000x400"),
                        (tight, "2097152x400", "8388608x400"))
                    for what, values in (("avail", avail), ("size", size))
                ],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "SemidRegistryDiskFillingUp",
                     "exp_alerts": []},
                    {"eval_time": "40m", "alertname": "SemidRegistryDiskFillingUp",
                     "exp_alerts": [{"exp_labels": dict(low_l, severity="warning")}]},
                    {"eval_time": "270m", "alertname": "SemidRegistryDiskFillingUp",
                     "exp_alerts": [{"exp_labels": dict(low_l, severity="warning")}]},
                    {"eval_time": "290m", "alertname": "SemidRegistryDiskFillingUp",
                     "exp_alerts": [{"exp_labels": dict(a, severity="warning")},
                                    {"exp_labels": dict(low_l, severity="warning")}]},
                    # a full disk pages within two minutes, not after 30 (nor
                    # does SemidRegistryDiskFillingUp fire for it yet)
                    {"eval_time": "9m", "alertname": "SemidRegistryDiskFull", "exp_alerts": []},
                    {"eval_time": "10m", "alertname": "SemidRegistryDiskFull", "exp_alerts": []},
                    {"eval_time": "11m", "alertname": "SemidRegistryDiskFull",
                     "exp_alerts": [{"exp_labels": dict(f, severity="critical")}]},
                    {"eval_time": "19m", "alertname": "SemidRegistryDiskFull",
                     "exp_alerts": [{"exp_labels": dict(f, severity="critical")}]},
                    {"eval_time": "19m", "alertname": "SemidRegistryDiskFillingUp",
                     "exp_alerts": []},
                    {"eval_time": "20m", "alertname": "SemidRegistryDiskFull", "exp_alerts": []},
                    {"eval_time": "61m", "alertname": "SemidRegistryDiskFull", "exp_alerts": []},
                    {"eval_time": "270m", "alertname": "SemidRegistryDiskFull", "exp_alerts": []},
                ],
            }],
        }


if __name__ == "__main__":
    unittest.main(verbosity=2)
