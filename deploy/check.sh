#!/usr/bin/env bash
# Validates the deployment files in deploy/, offline.
#
#   deploy/check.sh [METRICS_FILE...]
#
# Checks: Prometheus config and rules (promtool check config/rules, rule unit tests),
# Kubernetes manifests against the API schemas (kubernetes-validate, strict; with kubectl also
# the kustomize output, as shipped and with origin-s3.yaml swapped in), the chorus TOML configs
# against the flags in src/, compose.yaml and compose.s3.yaml (with garage/garage.toml), the
# systemd units and their drop-ins (when systemd-analyze is there), Grafana provisioning and
# dashboards (JSON, and every query's PromQL through promtool), and that every chorus_* metric a
# dashboard or rule uses exists:
#   - with METRICS_FILE arguments (the /metrics text of live origin, edge and peer nodes): in
#     the union of those files, each of which must also pass `promtool check metrics`;
#   - without: among the names in the Rust sources (core edge origin peer client-lib src).
#
# Needs: promtool (apt-get install prometheus), python3 with PyYAML (apt-get install
# python3-yaml), kubernetes-validate (pip install kubernetes-validate). Optional: kubectl
# (renders deploy/k8s with kustomize and validates the result), systemd-analyze.
#
# Environment:
#   K8S_VERSION                 Kubernetes API version to validate against (default 1.30.0)
#   CHORUS_CHECK_ALLOW_MISSING  space-separated metric names allowed to be missing from the
#                               METRICS_FILEs (reported as warnings), e.g. metrics
#                               of a node type whose /metrics was not given
set -euo pipefail

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$DEPLOY")"
K8S_VERSION="${K8S_VERSION:-1.30.0}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/chorus-check.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'check.sh: FAILED: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || fail "$1 not found; install it: $2"; }

need promtool "apt-get install prometheus (or the promtool binary of a Prometheus release)"
need python3 "apt-get install python3"
need kubernetes-validate "pip install kubernetes-validate"
python3 -c 'import yaml' 2>/dev/null || fail "python3 cannot import yaml; install it: apt-get install python3-yaml (or pip install pyyaml)"

METRICS_FILES=()
for f in "$@"; do
  [[ -f "$f" && -r "$f" ]] || fail "metrics file $f: not a readable file"
  METRICS_FILES+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")")
done

# The Python checks, one program with a sub-command per check.
read -r -d '' PY <<'PYEOF' || true
import json, os, re, sys

import yaml

DEPLOY, ROOT = os.environ["DEPLOY"], os.environ["ROOT"]
errors = []


def rel(p):
    return os.path.relpath(p, ROOT)


def err(msg):
    errors.append(msg)
    print(f"  ERROR {msg}", file=sys.stderr)


def done(what):
    if errors:
        print(f"check.sh: FAILED: {len(errors)} problem(s) in {what}", file=sys.stderr)
        sys.exit(1)


# ---- chorus flags, read from the sources (src/main.rs, src/*_cmd.rs, src/serve_args.rs) ----

def rust_structs():
    """struct name -> list of (field, attrs, type) over src/*.rs."""
    out = {}
    src = os.path.join(ROOT, "src")
    for name in sorted(os.listdir(src)):
        if not name.endswith(".rs"):
            continue
        text = open(os.path.join(src, name), encoding="utf-8").read()
        for m in re.finditer(r"\bstruct\s+(\w+)\s*\{(.*?)\n\}", text, re.S):
            fields, attrs, pending = [], [], None
            for line in m.group(2).splitlines():
                s = line.strip()
                if pending is not None:
                    pending += " " + s
                    if pending.count("[") <= pending.count("]"):
                        attrs.append(pending)
                        pending = None
                    continue
                if s.startswith("#["):
                    if s.count("[") > s.count("]"):
                        pending = s
                    else:
                        attrs.append(s)
                    continue
                if not s or s.startswith("//"):
                    continue
                fm = re.match(r"(?:pub(?:\([^)]*\))?\s+)?(\w+)\s*:\s*(.+?),?$", s)
                if fm:
                    fields.append((fm.group(1), " ".join(attrs), fm.group(2)))
                attrs = []
            out[m.group(1)] = fields
    return out


def command_flags():
    """command name -> {flag_key (with _): rust type}, including flattened and global flags."""
    structs = rust_structs()

    def flags_of(struct):
        res = {}
        for field, attrs, typ in structs.get(struct, []):
            if "flatten" in attrs:
                res.update(flags_of(typ.split("::")[-1]))
                continue
            if not re.search(r"#\[arg\([^\]]*\blong\b", attrs):
                continue
            lm = re.search(r'\blong\s*=\s*"([^"]+)"', attrs)
            long = lm.group(1) if lm else field.replace("_", "-")
            res[long.replace("-", "_")] = typ
        return res

    main = open(os.path.join(ROOT, "src", "main.rs"), encoding="utf-8").read()
    global_flags = flags_of("Global")
    em = re.search(r"enum\s+Cmd\s*\{(.*?)\n\}", main, re.S)
    cmds = {}
    for variant, struct in re.findall(r"^\s*(\w+)\(\s*(?:Box<\s*)?\w+::(\w+)\s*>?\s*\)", em.group(1) if em else "", re.M):
        name = re.sub(r"(?<!^)([A-Z])", r"-\1", variant).lower()
        cmds[name] = {**flags_of(struct), **global_flags}
    if not cmds.get("edge") or not cmds.get("origin"):
        err("could not read the flags of `chorus edge` / `chorus origin` from src/ (did the CLI move?)")
    return cmds


SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
              "t": 1000**4, "tb": 1000**4, "p": 1000**5, "pb": 1000**5, "ki": 1024, "kib": 1024,
              "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3, "ti": 1024**4, "tib": 1024**4,
              "pi": 1024**5, "pib": 1024**5}


def parse_size(s):
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(s))
    if not m or m.group(2).lower() not in SIZE_UNITS:
        return None
    return int(float(m.group(1)) * SIZE_UNITS[m.group(2).lower()])


def parse_quantity(q):
    """Kubernetes quantity -> bytes (binary and decimal suffixes)."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?", str(q))
    if not m:
        return None
    mult = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "Pi": 1024**5,
            "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "P": 1000**5}[m.group(2)]
    return int(float(m.group(1)) * mult)


def check_value(path, key, typ, value):
    inner = typ
    vm = re.fullmatch(r"(?:Vec|Option)<(.+)>", typ)
    if vm:
        inner = vm.group(1)
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not typ.startswith("Vec<"):
        err(f"{rel(path)}: {key}: a list, but --{key.replace('_', '-')} takes one value")
    for v in values:
        if inner == "bool":
            if not isinstance(v, bool):
                err(f"{rel(path)}: {key} = {v!r}: expected true or false")
        elif inner in ("usize", "u64", "u32", "u16"):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                err(f"{rel(path)}: {key} = {v!r}: expected a non-negative integer")
        elif inner == "Size":
            if parse_size(v) is None:
                err(f"{rel(path)}: {key} = {v!r}: not a size (write e.g. 512MiB, 10GiB or bytes)")
        elif inner == "Span":
            if not (isinstance(v, str) and re.fullmatch(r"\s*(?:[0-9]+\s*[a-zA-Z]+\s*)+", v)):
                err(f"{rel(path)}: {key} = {v!r}: not a duration (write e.g. 30s, 15m, 1h, 500ms)")
        elif inner == "Location":
            # src: origin/src/store/location.rs (a directory, or s3://BUCKET[/PREFIX]).
            if not isinstance(v, str) or not v:
                err(f"{rel(path)}: {key} = {v!r}: expected a directory or s3://BUCKET[/PREFIX]")
            elif "://" in v and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^/?#\\]+)*/?", v):
                err(f"{rel(path)}: {key} = {v!r}: not a store (a directory, or s3://BUCKET[/PREFIX] with a "
                    f"bucket name of 3 to 63 of a-z 0-9 . -; the endpoint goes in AWS_ENDPOINT_URL)")
        elif inner == "ListenUrl":
            if not (isinstance(v, str) and re.fullmatch(r"(http|https|h3)://(\[[0-9a-fA-F:.]+\]|[^/:\[\]]+):[0-9]{1,5}/?", v)):
                err(f"{rel(path)}: {key} = {v!r}: not a listen URL (http://, https://, h3://HOST:PORT)")
        elif not isinstance(v, str):
            err(f"{rel(path)}: {key} = {v!r}: expected a string")
    if key in ("upstream", "parent"):
        for v in values:
            if not (isinstance(v, str) and re.fullmatch(r"(http|https|h3)://[^/]+:[0-9]{1,5}/?", v)):
                err(f"{rel(path)}: {key} = {v!r}: expected http://, https:// or h3://HOST:PORT")


def toml_module(what):
    try:
        import tomllib  # Python >= 3.11
    except ImportError:
        try:
            import tomli as tomllib
        except ImportError:
            err("reading TOML needs Python >= 3.11 (tomllib) or the tomli package (pip install tomli)")
            done(what)
    return tomllib


def cmd_toml():
    tomllib = toml_module("the chorus TOML configs")
    cmds = command_flags()
    done("reading the chorus flags")
    # Every chorus config: systemd/*.toml and k8s/config/*.toml, for the command their name
    # starts with (edge.toml, origin.toml, origin-s3.toml...).
    files = []
    for d in ("systemd", "k8s/config"):
        for n in sorted(os.listdir(os.path.join(DEPLOY, d))):
            if n.endswith(".toml"):
                cmd = next((c for c in ("edge", "origin", "peer") if n.startswith(c)), None)
                if cmd is None:
                    err(f"deploy/{d}/{n}: which command does it configure? (name it edge*.toml, origin*.toml or peer*.toml)")
                    continue
                files.append((f"{d}/{n}", cmd))
    for name, cmd in files:
        path = os.path.join(DEPLOY, name)
        print(f"  {rel(path)} (chorus {cmd}: {len(cmds.get(cmd, {}))} flags)")
        try:
            table = tomllib.load(open(path, "rb"))
        except Exception as e:  # noqa: BLE001
            err(f"{rel(path)}: not valid TOML: {e}")
            continue
        flags = cmds.get(cmd, {})
        for key, value in table.items():
            if isinstance(value, dict):
                if key != cmd:
                    err(f"{rel(path)}: section [{key}]: this file configures `chorus {cmd}`; only [{cmd}] applies")
                    continue
                items = value.items()
            else:
                items = [(key, value)]
            for k, v in items:
                if k not in flags:
                    err(f"{rel(path)}: unknown key {k!r}: `chorus {cmd}` has no flag --{k.replace('_', '-')}")
                else:
                    check_value(path, k, flags[k], v)
        if cmd == "origin":
            check_object_store(path, {**{k: v for k, v in table.items() if not isinstance(v, dict)},
                                      **table.get("origin", {})})
    # Sizes in the Kubernetes edge config must fit the pod's limits.
    edge_cfg = tomllib.load(open(os.path.join(DEPLOY, "k8s/config/edge.toml"), "rb"))
    docs = list(yaml.safe_load_all(open(os.path.join(DEPLOY, "k8s/edge.yaml"))))
    dep = next((d for d in docs if d and d.get("kind") == "Deployment"), None)
    if dep:
        spec = dep["spec"]["template"]["spec"]
        cache_vol = next((v for v in spec.get("volumes", []) if v.get("name") == "cache"), {})
        limit = parse_quantity(cache_vol.get("emptyDir", {}).get("sizeLimit", ""))
        disk = parse_size(edge_cfg.get("cache_disk_size", "10GiB"))
        if limit is None or disk is None or disk > 0.95 * limit:
            err(f"deploy/k8s: cache_disk_size {edge_cfg.get('cache_disk_size')} must be below ~95% of the "
                f"cache emptyDir sizeLimit {cache_vol.get('emptyDir', {}).get('sizeLimit')} (else the kubelet evicts the pod)")
        else:
            print(f"  k8s edge: cache_disk_size {disk / 2**30:.1f} GiB fits the emptyDir sizeLimit {limit / 2**30:.1f} GiB")
        edge_c = next((c for c in spec["containers"] if c["name"] == "edge"), {})
        check_cache_fits("edge", edge_cfg, "512MiB", edge_c)
    check_origin_s3_pod(tomllib)
    check_config_mounts()
    done("the chorus TOML configs")


def check_cache_fits(who, cfg, default, container):
    """A node's memory cache (cache_mem_size) leaves at least a quarter of its container's memory limit."""
    limit_text = container.get("resources", {}).get("limits", {}).get("memory", "")
    mem_limit = parse_quantity(limit_text)
    mem = parse_size(cfg.get("cache_mem_size", default))
    if mem_limit is None or mem is None or mem > 0.75 * mem_limit:
        err(f"deploy/k8s: the {who} cache_mem_size {cfg.get('cache_mem_size', default)} must leave room (>= 25%) in "
            f"the container's memory limit {limit_text or '(none)'}")
    else:
        print(f"  k8s {who}: cache_mem_size {mem / 2**30:.2f} GiB fits the memory limit {mem_limit / 2**30:.2f} GiB")


def s3_bucket(v):
    """The bucket of an s3:// location, else None."""
    return v[5:].split("/", 1)[0] if isinstance(v, str) and v.startswith("s3://") else None


def check_object_store(path, cfg):
    """An origin config on an object store keeps content keys out of the catalogue's bucket."""
    bucket = s3_bucket(cfg.get("store"))
    if not bucket:
        return
    if s3_bucket(cfg.get("key_store")) == bucket:
        err(f"{rel(path)}: key_store {cfg['key_store']!r} is in the catalogue's bucket: content keys would sit "
            f"beside their ciphertext (a read credential becomes a decryption credential); use another bucket")
    print(f"  {rel(path)}: object store {cfg['store']}" + (f", content keys in {cfg['key_store']}" if cfg.get("key_store") else ""))


def k8s_workloads(name):
    docs = [d for d in yaml.safe_load_all(open(os.path.join(DEPLOY, "k8s", name))) if d]
    return [d for d in docs if d.get("kind") in ("Deployment", "StatefulSet")]


def check_origin_s3_pod(tomllib):
    """The Deployment of k8s/origin-s3.yaml fits its config: cache in memory, work_dir on a volume."""
    path = os.path.join(DEPLOY, "k8s/config/origin-s3.toml")
    cfg = tomllib.load(open(path, "rb"))
    if not s3_bucket(cfg.get("store")):
        err(f"{rel(path)}: store = {cfg.get('store')!r}: origin-s3.yaml has no volume for a directory store; expected s3://BUCKET[/PREFIX]")
    dep = next((d for d in k8s_workloads("origin-s3.yaml") if d["kind"] == "Deployment"), None)
    if not dep:
        err("deploy/k8s/origin-s3.yaml: no Deployment")
        return
    spec = dep["spec"]["template"]["spec"]
    c = next((c for c in spec["containers"] if c["name"] == "origin"), {})
    check_cache_fits("origin-s3", cfg, "256MiB", c)

    def volume_of(p):
        """The pod volume that holds path p (the longest mountPath above it)."""
        mounts = sorted((m for m in c.get("volumeMounts", []) if p and (p + "/").startswith(m["mountPath"].rstrip("/") + "/")),
                        key=lambda m: len(m["mountPath"]))
        return next((v for v in spec.get("volumes", []) if mounts and v["name"] == mounts[-1]["name"]), None)

    if cfg.get("cache_dir"):
        vol = volume_of(cfg["cache_dir"])
        limit = parse_quantity((vol or {}).get("emptyDir", {}).get("sizeLimit", ""))
        disk = parse_size(cfg.get("cache_disk_size", "10GiB"))
        if vol is None or limit is None or disk is None or disk > 0.95 * limit:
            err(f"deploy/k8s: origin-s3.toml cache_dir {cfg['cache_dir']!r}: cache_disk_size {cfg.get('cache_disk_size', '10GiB')} "
                f"must be on an emptyDir of the pod and below ~95% of its sizeLimit (else the kubelet evicts the pod)")
        else:
            print(f"  k8s origin-s3: cache_disk_size {disk / 2**30:.1f} GiB fits the emptyDir {vol['name']!r} ({limit / 2**30:.1f} GiB)")
    work = cfg.get("work_dir")
    vol = volume_of(work)
    limit = parse_quantity((vol or {}).get("emptyDir", {}).get("sizeLimit", ""))
    upload = parse_size(cfg.get("max_upload_size", "2GiB"))
    if not work or vol is None:
        err(f"deploy/k8s: origin-s3.toml work_dir {work!r} is on no volume of the pod (its root filesystem is read-only)")
    elif limit is None or upload is None or upload > 0.5 * limit:
        err(f"deploy/k8s: origin-s3.toml max_upload_size {cfg.get('max_upload_size', '2GiB')} must fit twice (the upload "
            f"and its encoded ladder) in the {vol['name']!r} emptyDir sizeLimit {vol.get('emptyDir', {}).get('sizeLimit')}")
    else:
        print(f"  k8s origin-s3: work_dir on emptyDir {vol['name']!r} ({limit / 2**30:.0f} GiB), uploads up to {upload / 2**30:.0f} GiB")


def check_config_mounts():
    """Each chorus container's --config file is a file of the ConfigMap mounted there."""
    kust = yaml.safe_load(open(os.path.join(DEPLOY, "k8s/kustomization.yaml")))
    generated = {g["name"]: {os.path.basename(f.split("=")[-1]) for f in g.get("files", [])}
                 for g in kust.get("configMapGenerator", [])}
    for name in ("origin.yaml", "origin-s3.yaml", "edge.yaml"):
        for w in k8s_workloads(name):
            spec = w["spec"]["template"]["spec"]
            for c in spec["containers"]:
                args = c.get("args", [])
                if "--config" not in args:
                    continue
                cfg = args[args.index("--config") + 1]
                mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == os.path.dirname(cfg)), None)
                vol = next((v for v in spec.get("volumes", []) if mount and v["name"] == mount["name"]), {})
                cm = vol.get("configMap", {}).get("name")
                if os.path.basename(cfg) not in generated.get(cm, set()):
                    err(f"deploy/k8s/{name}: {w['kind']} {w['metadata']['name']}: --config {cfg}: no ConfigMap generated "
                        f"by kustomization.yaml with that file is mounted at {os.path.dirname(cfg)} (found: {cm})")
                else:
                    print(f"  k8s {w['kind']} {w['metadata']['name']}: --config {cfg} from ConfigMap {cm}")


# ---- kustomize output: the edges' upstreams ----

def cmd_upstreams(rendered):
    """In a rendered kustomization, the edges' upstreams name a Service (or a StatefulSet pod of
    a headless one) of the same output, on a port it serves."""
    tomllib = toml_module("the edges' upstreams")
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    sets = {d["spec"].get("serviceName"): d for d in docs if d["kind"] == "StatefulSet"}
    edge_cfgs = [d for d in docs if d["kind"] == "ConfigMap" and "edge.toml" in (d.get("data") or {})]
    if not edge_cfgs:
        err(f"{rendered}: no ConfigMap with edge.toml")
    for cm in edge_cfgs:
        for url in tomllib.loads(cm["data"]["edge.toml"]).get("upstream", []):
            m = re.fullmatch(r"(?:http|https|h3)://([^/:]+):([0-9]+)/?", url)
            if not m:
                err(f"edge.toml: upstream {url!r}: not http(s)/h3://HOST:PORT")
                continue
            host, port = m.group(1), int(m.group(2))
            # SERVICE[.NAMESPACE[.svc...]], or POD.SERVICE[...] of a StatefulSet's headless Service.
            parts = host.split(".")
            svc, what = services.get(parts[0]), f"Service {parts[0]}"
            if svc is None and len(parts) >= 2 and parts[1] in services:
                svc = services[parts[1]]
                sts = sets.get(parts[1])
                pm = re.fullmatch(r"(.+)-([0-9]+)", parts[0])
                if not (sts and pm and pm.group(1) == sts["metadata"]["name"] and int(pm.group(2)) < sts["spec"].get("replicas", 1)):
                    svc = None
                what = f"pod {parts[0]} of StatefulSet {sts['metadata']['name'] if sts else '?'} (Service {parts[1]})"
            if svc is None:
                err(f"edge.toml: upstream {url}: {host} is neither a Service nor a StatefulSet pod in this output "
                    f"(Services: {', '.join(sorted(services))})")
            elif port not in [p["port"] for p in svc["spec"].get("ports", [])]:
                err(f"edge.toml: upstream {url}: Service {svc['metadata']['name']} has no port {port}")
            else:
                print(f"  edges' upstream {url}: {what}")
    done("the edges' upstreams")


# ---- compose.yaml ----

COMPOSE_FILES = {
    "compose.yaml": ("origin", "edge-1", "edge-2", "prometheus", "grafana"),
    "compose.s3.yaml": ("garage", "garage-init", "ingest", "origin-1", "origin-2", "edge-1", "edge-2"),
}


def cmd_compose():
    cmds = command_flags()
    done("reading the chorus flags")
    for name, want in COMPOSE_FILES.items():
        check_compose(os.path.join(DEPLOY, name), want, cmds)
    done("the compose files")


def chorus_invocations(svc):
    """(command, [flag names]) of every chorus run in a service: its command (the image's
    entrypoint is chorus), the chorus lines of a shell script, and its healthcheck."""
    runs = []
    cmd = svc.get("command") or []
    if isinstance(cmd, list) and cmd and not svc.get("entrypoint"):
        runs.append(cmd)
    scripts = [c for c in (cmd if isinstance(cmd, list) else [cmd]) if svc.get("entrypoint") and isinstance(c, str)]
    for script in scripts:
        for line in script.replace("\\\n", " ").splitlines():
            for m in re.finditer(r"\bchorus\s+(.*)", line):
                runs.append(m.group(1).split())
    test = (svc.get("healthcheck") or {}).get("test") or []
    if isinstance(test, list) and "chorus" in test:
        runs.append(test[test.index("chorus") + 1:])
    return [(r[0], [a[2:].split("=")[0] for a in r[1:] if a.startswith("--")]) for r in runs if r]


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: str(v) for k, v in env.items()}


def command_text(svc):
    cmd = svc.get("command") or []
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def check_compose(path, want, cmds):
    try:
        doc = yaml.safe_load(open(path))
    except yaml.YAMLError as e:
        err(f"{rel(path)}: not valid YAML: {e}")
        return
    services = doc.get("services") or {}
    volumes = set((doc.get("volumes") or {}).keys())
    for w in want:
        if w not in services:
            err(f"{rel(path)}: no service {w!r}")
    for name, svc in services.items():
        if "image" not in svc and "build" not in svc:
            err(f"{rel(path)}: service {name}: neither image nor build")
        deps = svc.get("depends_on") or {}
        for dep in (deps if isinstance(deps, list) else deps.keys()):
            if dep not in services:
                err(f"{rel(path)}: service {name} depends on unknown service {dep!r}")
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith((".", "/")):
                if not os.path.exists(os.path.normpath(os.path.join(DEPLOY, source))):
                    err(f"{rel(path)}: service {name}: bind-mount source {source} does not exist")
            elif source and source not in volumes:
                err(f"{rel(path)}: service {name}: volume {source!r} is not declared under volumes:")
        build = svc.get("build")
        if isinstance(build, dict):
            ctx = os.path.normpath(os.path.join(DEPLOY, build.get("context", ".")))
            if not os.path.isfile(os.path.join(ctx, build.get("dockerfile", "Dockerfile"))):
                err(f"{rel(path)}: service {name}: no {build.get('dockerfile')} in build context {rel(ctx)}")
    # Every flag given to chorus is one of that command's flags (src/).
    for name, svc in services.items():
        for cmd, flags in chorus_invocations(svc):
            if cmd not in cmds:
                continue  # `chorus keys generate` and the like: subcommand groups, not read here
            for f in flags:
                if f.replace("-", "_") not in cmds[cmd]:
                    err(f"{rel(path)}: service {name}: `chorus {cmd}` has no flag --{f}")
    # Every --upstream names a service of this file and a port it listens on.
    for name, svc in services.items():
        for host, port in re.findall(r"--upstream[= ](?:http|https|h3)://([^/:\s]+):([0-9]+)", command_text(svc)):
            listens = re.findall(r"--listen[= ](?:http|https|h3)://[^/:\s]+:([0-9]+)", command_text(services.get(host, {})))
            if host not in services:
                err(f"{rel(path)}: service {name}: --upstream {host}:{port}: no service {host!r}")
            elif port not in listens:
                err(f"{rel(path)}: service {name}: --upstream {host}:{port}: {host} listens on {listens or 'no --listen port'}")
    # An S3 store in the file (Garage): the endpoint, region and bucket the chorus services use
    # are the ones its config and its init service set up.
    buckets = {env_of(s).get("BUCKET") for s in services.values()} - {None}
    for name, svc in services.items():
        env = env_of(svc)
        m = re.fullmatch(r"https?://([^/:]+)(?::([0-9]+))?/?", env.get("AWS_ENDPOINT_URL", ""))
        if not m:
            continue
        store = services.get(m.group(1))
        if store is None:
            err(f"{rel(path)}: service {name}: AWS_ENDPOINT_URL {env['AWS_ENDPOINT_URL']}: no service {m.group(1)!r}")
            continue
        conf = next((v.split(":")[0] for v in store.get("volumes") or [] if isinstance(v, str) and v.split(":")[0].endswith("garage.toml")), None)
        if conf:
            tomllib = toml_module("the compose files")
            try:
                garage = tomllib.load(open(os.path.normpath(os.path.join(DEPLOY, conf)), "rb"))
            except Exception as e:  # noqa: BLE001
                err(f"{rel(path)}: {conf}: not valid TOML: {e}")
                continue
            s3 = garage.get("s3_api", {})
            if env.get("AWS_REGION") != s3.get("s3_region"):
                err(f"{rel(path)}: service {name}: AWS_REGION {env.get('AWS_REGION')!r} is not the s3_region {s3.get('s3_region')!r} of {conf}")
            if (m.group(2) or "80") != str(s3.get("api_bind_addr", "")).rsplit(":", 1)[-1]:
                err(f"{rel(path)}: service {name}: AWS_ENDPOINT_URL port {m.group(2)} is not the api_bind_addr {s3.get('api_bind_addr')!r} of {conf}")
        for b in set(re.findall(r"s3://([a-z0-9.-]+)", command_text(svc))):
            if buckets and b not in buckets:
                err(f"{rel(path)}: service {name}: bucket {b!r} is not the one the init service creates ({', '.join(sorted(buckets))})")
    print(f"  {rel(path)}: {len(services)} services, {len(volumes)} volumes")


# ---- Grafana ----

def walk_panels(panels):
    for p in panels or []:
        yield p
        yield from walk_panels(p.get("panels"))


def dashboard_queries(path, dash):
    """(where, expr) for every panel target and every query variable."""
    out = []
    for p in walk_panels(dash.get("panels")):
        for t in p.get("targets") or []:
            if t.get("expr"):
                out.append((f"{os.path.basename(path)}: panel {p.get('id')} {p.get('title')!r} query {t.get('refId')}", t["expr"]))
    for v in (dash.get("templating") or {}).get("list") or []:
        q = v.get("query")
        if v.get("type") == "query":
            q = q.get("query") if isinstance(q, dict) else q
            if q:
                out.append((f"{os.path.basename(path)}: variable ${v.get('name')}", q))
    return out


def dashboards():
    d = os.path.join(DEPLOY, "grafana", "dashboards")
    return [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(".json")]


def cmd_grafana(out_rules):
    for sub in ("datasources", "dashboards"):
        d = os.path.join(DEPLOY, "grafana", "provisioning", sub)
        for n in sorted(os.listdir(d)):
            p = os.path.join(d, n)
            try:
                doc = yaml.safe_load(open(p))
            except yaml.YAMLError as e:
                err(f"{rel(p)}: not valid YAML: {e}")
                continue
            if not isinstance(doc, dict) or doc.get("apiVersion") != 1 or not (doc.get("datasources") or doc.get("providers")):
                err(f"{rel(p)}: not a Grafana provisioning file (apiVersion: 1 with datasources: or providers:)")
            print(f"  {rel(p)}")
    uids, rules = {}, []
    for path in dashboards():
        try:
            dash = json.load(open(path))
        except ValueError as e:
            err(f"{rel(path)}: not valid JSON: {e}")
            continue
        uid = dash.get("uid")
        if not uid or not dash.get("title"):
            err(f"{rel(path)}: dashboard without uid or title")
        elif uid in uids:
            err(f"{rel(path)}: uid {uid!r} also used by {uids[uid]}")
        uids[uid] = rel(path)
        ids = [p.get("id") for p in walk_panels(dash.get("panels"))]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            err(f"{rel(path)}: duplicate panel ids {sorted(dup)}")
        queries = dashboard_queries(path, dash)
        for i, (where, expr) in enumerate(queries):
            if where.split(": ", 1)[1].startswith("variable"):
                m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", expr)
                if not m:
                    continue
                expr = m.group(1)
            # Grafana's variables, replaced by values PromQL accepts.
            e = (expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
                 .replace("${instance}", ".*").replace("$instance", ".*").replace("${origin}", ".*").replace("$origin", ".*"))
            if "$" in e:
                err(f"deploy/grafana/dashboards/{where}: unknown Grafana variable in {expr!r}")
                continue
            name = re.sub(r"[^a-zA-Z0-9_]", "_", os.path.basename(path)[:-5])
            rules.append({"record": f"dashboard:{name}:q{i}", "expr": e, "labels": {"where": where}})
        print(f"  {rel(path)}: {len(ids)} panels, {len(queries)} queries")
    yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, open(out_rules, "w"), sort_keys=False)
    done("the Grafana files")


# ---- metric names ----

TOKEN = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')


def names_in(expr):
    """Metric-name-like tokens of a PromQL expression (string literals removed)."""
    return set(TOKEN.findall(STRINGS.sub('""', expr)))


def source_names():
    """Names exported by the Rust code, and which of them are histograms."""
    names, hist = set(), set()
    for top in ("core", "http", "edge", "origin", "peer", "client-lib", "src"):
        for dirpath, dirnames, files in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = [d for d in dirnames if d != "target"]
            for f in files:
                if not f.endswith(".rs"):
                    continue
                text = open(os.path.join(dirpath, f), encoding="utf-8").read()
                names.update(re.findall(r'"(chorus_[a-z0-9_]+)"', text))
                hist.update(re.findall(r'Histogram(?:Opts)?::(?:new|with_opts)\(\s*(?:HistogramOpts::new\(\s*)?"(chorus_[a-z0-9_]+)"', text))
                # chorus_http::metrics::RequestCounter::new(&registry, "edge") registers
                # chorus_edge_requests_total (the name is built with format!).
                names.update(f"chorus_{n}_requests_total" for n in re.findall(r'RequestCounter::new\([^,()]+,\s*"(\w+)"\)', text))
    names.update({"chorus_edge_requests_total", "chorus_origin_requests_total"})
    pending = set()  # names in SPEC §6 announced but not exported yet: none
    return names | pending, hist, pending


def file_names(paths):
    names, hist = set(), set()
    for p in paths:
        for line in open(p, encoding="utf-8", errors="replace"):
            line = line.strip()
            if not line:
                continue
            m = re.match(r"#\s*(HELP|TYPE)\s+([A-Za-z_:][A-Za-z0-9_:]*)(?:\s+(\S+))?", line)
            if m:
                names.add(m.group(2))
                if m.group(1) == "TYPE" and m.group(3) in ("histogram", "summary"):
                    hist.add(m.group(2))
                continue
            if line.startswith("#"):
                continue
            m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)", line)
            if m:
                names.add(m.group(1))
    return names, hist


def cmd_metrics(files):
    rules_path = os.path.join(DEPLOY, "prometheus", "rules.yml")
    rules_doc = yaml.safe_load(open(rules_path))
    recorded, used = set(), []
    for g in rules_doc.get("groups", []):
        for r in g.get("rules", []):
            if r.get("record"):
                recorded.add(r["record"])
    for g in rules_doc.get("groups", []):
        for r in g.get("rules", []):
            what = f"record {r['record']}" if r.get("record") else f"alert {r.get('alert')}"
            used.append((f"{rel(rules_path)}: {what}", r.get("expr", "")))
    for path in dashboards():
        try:
            used += [(f"deploy/grafana/dashboards/{w}", e) for w, e in dashboard_queries(path, json.load(open(path)))]
        except ValueError:
            pass  # reported by the Grafana check
    if files:
        known, hist = file_names(files)
        origin = "the metrics files (" + ", ".join(os.path.basename(f) for f in files) + ")"
        allowed = set(os.environ.get("CHORUS_CHECK_ALLOW_MISSING", "").split())
        pending = set()
    else:
        known, hist, pending = source_names()
        origin = "the Rust sources (core edge origin peer client-lib src)"
        allowed = set()
    print(f"  known names: {len(known)} from {origin}; recording rules: {len(recorded)}")
    suffixes = ("_bucket", "_sum", "_count")
    checked, warned, missing_total = set(), set(), 0
    for where, expr in used:
        for tok in sorted(names_in(expr)):
            if "chorus_" not in tok:
                continue
            if ":" in tok:
                if tok not in recorded:
                    err(f"{where}: {tok} is not a recording rule defined in deploy/prometheus/rules.yml")
                continue
            if not tok.startswith("chorus_"):
                continue
            checked.add(tok)
            if tok in known:
                continue
            base = next((tok[: -len(s)] for s in suffixes if tok.endswith(s)), None)
            if base and base in hist:
                continue
            if base and base in known and files:
                continue  # a histogram family whose TYPE line the file lacks
            if tok in allowed:
                if tok not in warned:
                    print(f"  WARNING {tok}: not in {origin}; allowed by CHORUS_CHECK_ALLOW_MISSING")
                    warned.add(tok)
                continue
            hint = f" ({base} is not a histogram)" if base and base in known else ""
            err(f"{where}: metric {tok} is not in {origin}{hint}")
            missing_total += 1
    print(f"  {len(checked)} chorus_* metric names used in rules.yml and dashboards: " + " ".join(sorted(checked)))
    if pending & checked:
        print(f"  note: {' '.join(sorted(pending & checked))} is announced in SPEC §6 and not exported yet")
    def family(n):
        return next((n[: -len(x)] for x in suffixes if n.endswith(x) and n[: -len(x)] in hist), n)
    unused = sorted({family(n) for n in known if n.startswith("chorus_")} - {family(n) for n in checked})
    if unused:
        print(f"  (exported, but used by no rule or dashboard: {' '.join(unused)})")
    done("the metric names")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"toml": lambda: cmd_toml(), "compose": lambda: cmd_compose(), "upstreams": lambda: cmd_upstreams(args[0]),
     "grafana": lambda: cmd_grafana(args[0]), "metrics": lambda: cmd_metrics(args)}[cmd]()
PYEOF
export DEPLOY ROOT
pycheck() { python3 -c "$PY" "$@"; }

cd "$DEPLOY"

step "Prometheus: configuration (promtool check config)"
promtool check config prometheus/prometheus.yml || fail "deploy/prometheus/prometheus.yml"
# prometheus-k8s.yml uses Kubernetes service discovery, which Debian's promtool is built
# without: check it there with that discovery swapped for a static one.
if out="$(promtool check config prometheus/prometheus-k8s.yml 2>&1)"; then
  printf '%s\n' "$out"
elif grep -q 'field kubernetes_sd_configs not found' <<<"$out"; then
  echo "  note: this promtool has no Kubernetes discovery (Debian's build); checking prometheus-k8s.yml with it replaced by static_configs"
  cp -r prometheus "$TMP/prom"
  python3 - "$TMP/prom/prometheus-k8s.yml" <<'PYEOF'
import sys, yaml
p = sys.argv[1]
doc = yaml.safe_load(open(p))
for sc in doc.get("scrape_configs", []):
    if sc.pop("kubernetes_sd_configs", None) is not None:
        sc.setdefault("static_configs", []).append({"targets": ["pod.invalid:80"]})
yaml.safe_dump(doc, open(p, "w"), sort_keys=False)
PYEOF
  promtool check config "$TMP/prom/prometheus-k8s.yml" || fail "deploy/prometheus/prometheus-k8s.yml"
else
  printf '%s\n' "$out" >&2
  fail "deploy/prometheus/prometheus-k8s.yml"
fi

step "Prometheus: rules (promtool check rules)"
promtool check rules prometheus/rules.yml || fail "deploy/prometheus/rules.yml"

if ((${#METRICS_FILES[@]})); then
  step "Metrics files (promtool check metrics)"
  for f in "${METRICS_FILES[@]}"; do
    echo "  $f"
    promtool check metrics <"$f" || fail "$f: promtool check metrics found problems (above)"
  done
fi

step "Metric names used by rules.yml and the dashboards"
pycheck metrics "${METRICS_FILES[@]}"

step "Prometheus: rule unit tests (promtool test rules)"
promtool test rules prometheus/rules_test.yml || fail "deploy/prometheus/rules_test.yml: a rule does not compute what it should"

step "Kubernetes manifests (kubernetes-validate --strict, API $K8S_VERSION)"
kubernetes-validate -k "$K8S_VERSION" --strict k8s/origin.yaml k8s/origin-s3.yaml k8s/edge.yaml k8s/tracker-redis.yaml \
  k8s-redis-cluster/tracker-redis-cluster.yaml || fail "deploy/k8s: manifests do not validate"
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize k8s >"$TMP/k8s-rendered.yaml" || fail "deploy/k8s: kubectl kustomize failed"
  kubernetes-validate -k "$K8S_VERSION" --strict "$TMP/k8s-rendered.yaml" || fail "deploy/k8s: the kustomize output does not validate"
  pycheck upstreams "$TMP/k8s-rendered.yaml"
  # The variant on object storage, made as kustomization.yaml and config/edge.toml say: the
  # line `- origin.yaml` becomes `- origin-s3.yaml`, the edges' upstream its Service.
  echo "  with origin-s3.yaml swapped in for origin.yaml (as kustomization.yaml describes):"
  cp -r k8s "$TMP/k8s-s3"
  sed -i 's/^  - origin\.yaml$/  - origin-s3.yaml/' "$TMP/k8s-s3/kustomization.yaml"
  sed -i 's#^upstream = .*#upstream = ["http://chorus-origin-s3:8080"]#' "$TMP/k8s-s3/config/edge.toml"
  grep -q '^  - origin-s3\.yaml$' "$TMP/k8s-s3/kustomization.yaml" && grep -q 'chorus-origin-s3' "$TMP/k8s-s3/config/edge.toml" ||
    fail "deploy/k8s: cannot swap origin-s3.yaml in (kustomization.yaml has no line '  - origin.yaml', or edge.toml no 'upstream = ' line)"
  kubectl kustomize "$TMP/k8s-s3" >"$TMP/k8s-s3-rendered.yaml" || fail "deploy/k8s with origin-s3.yaml: kubectl kustomize failed"
  kubernetes-validate -k "$K8S_VERSION" --strict "$TMP/k8s-s3-rendered.yaml" ||
    fail "deploy/k8s with origin-s3.yaml: the kustomize output does not validate"
  pycheck upstreams "$TMP/k8s-s3-rendered.yaml"
  # The overlay with the tracker on a Redis Cluster: one tracker (the cluster), the edges
  # pointed at it.
  echo "  with the tracker on a Redis Cluster (k8s-redis-cluster):"
  kubectl kustomize k8s-redis-cluster >"$TMP/k8s-cluster-rendered.yaml" || fail "deploy/k8s-redis-cluster: kubectl kustomize failed"
  kubernetes-validate -k "$K8S_VERSION" --strict "$TMP/k8s-cluster-rendered.yaml" ||
    fail "deploy/k8s-redis-cluster: the kustomize output does not validate"
  grep -q '^  name: chorus-tracker-redis$' "$TMP/k8s-cluster-rendered.yaml" &&
    fail "deploy/k8s-redis-cluster: the one-Redis tracker is still in the output"
  grep -q 'value: redis+cluster://' "$TMP/k8s-cluster-rendered.yaml" ||
    fail "deploy/k8s-redis-cluster: the edges' CHORUS_TRACKER is not the cluster"
else
  echo "  note: no kubectl, so kustomization.yaml is not rendered (kubectl kustomize deploy/k8s)"
fi

step "chorus TOML configs (keys and values against the flags in src/)"
pycheck toml

step "Compose files (YAML, services, volumes, bind mounts, upstreams, the S3 store of compose.s3.yaml)"
pycheck compose

step "Grafana provisioning and dashboards (YAML, JSON, PromQL of every query)"
pycheck grafana "$TMP/dashboard-queries.yml"
promtool check rules "$TMP/dashboard-queries.yml" >"$TMP/promtool-dash.log" 2>&1 || {
  # Name the panel behind each failing query (recorded as dashboard:FILE:qN).
  python3 - "$TMP/dashboard-queries.yml" "$TMP/promtool-dash.log" <<'PYEOF' >&2
import re, sys, yaml
where = {r["record"]: (r["labels"]["where"], r["expr"])
         for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"]}
for line in open(sys.argv[2]):
    m = re.search(r'"(dashboard:[^"]+)": (.*)', line)
    if m and m.group(1) in where:
        w, e = where[m.group(1)]
        print(f"  ERROR deploy/grafana/dashboards/{w}: {m.group(2).strip()}\n        {e}")
    elif line.strip() and "dashboard:" not in line:
        print("  " + line.rstrip())
PYEOF
  fail "a dashboard query is not valid PromQL (above)"
}
echo "  every dashboard query parses (promtool)"

step "systemd units"
if command -v systemd-analyze >/dev/null 2>&1; then
  mkdir -p "$TMP/systemd"
  for u in systemd/*.service; do
    # verify needs the ExecStart binary to exist: check the unit with a stand-in.
    sed 's#/usr/local/bin/chorus#/bin/true#' "$u" >"$TMP/systemd/$(basename "$u")"
  done
  sd_version="$(systemd-analyze --version | awk 'NR==1 {print $2}')"
  out="$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no --generators=no "$TMP"/systemd/*.service 2>&1)" ||
    { printf '%s\n' "$out" >&2; fail "deploy/systemd: systemd-analyze verify failed"; }
  # Keys newer than this systemd are expected: RestartSteps/RestartMaxDelaySec need 254.
  bad="$(grep -vE "Unknown key '(RestartSteps|RestartMaxDelaySec)'" <<<"$out" | grep -E 'Unknown|Invalid|Failed|[Ff]ailed to parse|not valid|ignoring' || true)"
  [[ -z "$bad" ]] || { printf '%s\n' "$bad" >&2; fail "deploy/systemd: systemd-analyze verify reports problems (above)"; }
  echo "  systemd-analyze verify: OK (systemd $sd_version)"
  # Drop-ins (systemd/UNIT.service.d/*.conf): each unit again, with its drop-ins beside it, as
  # systemd would load them from /etc/systemd/system/UNIT.service.d/.
  units=("$TMP"/systemd/*.service)
  for d in systemd/*.service.d; do
    [[ -d "$d" ]] || continue
    u="$(basename "$d" .d)"
    [[ -f "systemd/$u" ]] || fail "deploy/$d: drop-ins for $u, which is not in deploy/systemd"
    mkdir -p "$TMP/dropin-$u/$u.d"
    sed 's#/usr/local/bin/chorus#/bin/true#' "systemd/$u" >"$TMP/dropin-$u/$u"
    for c in "$d"/*.conf; do
      sed 's#/usr/local/bin/chorus#/bin/true#' "$c" >"$TMP/dropin-$u/$u.d/$(basename "$c")"
    done
    out="$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no --generators=no "$TMP/dropin-$u/$u" 2>&1)" ||
      { printf '%s\n' "$out" >&2; fail "deploy/$d: systemd-analyze verify failed"; }
    bad="$(grep -vE "Unknown key '(RestartSteps|RestartMaxDelaySec)'" <<<"$out" | grep -E 'Unknown|Invalid|Failed|[Ff]ailed to parse|not valid|ignoring' || true)"
    [[ -z "$bad" ]] || { printf '%s\n' "$bad" >&2; fail "deploy/$d: systemd-analyze verify reports problems (above)"; }
    echo "  systemd-analyze verify: $u with $(cd "$d" && echo *.conf): OK"
    units+=("$TMP/dropin-$u/$u")
  done
  if ((sd_version >= 250)); then
    for u in "${units[@]}"; do
      # --threshold is exposure x 10: fail above an exposure of 3.0 ("OK" is below 4).
      score="$(systemd-analyze security --offline=true --threshold=30 "$u" 2>/dev/null | grep -o 'exposure level for .*' || true)"
      with=""
      [[ -d "$u.d" ]] && with=" (with $(cd "$u.d" && echo *.conf))"
      systemd-analyze security --offline=true --threshold=30 "$u" >/dev/null 2>&1 ||
        fail "deploy/systemd/$(basename "$u")$with: exposure above 3.0 ($score)"
      echo "  $score$with"
    done
  fi
else
  echo "  note: no systemd-analyze, units not verified"
fi

printf '\nAll deployment checks passed.\n'
