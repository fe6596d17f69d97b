#!/usr/bin/env bash
# Validates the deployment files in deploy/, offline.
#
#   deploy/check.sh [METRICS_FILE...]
#
# Checks: Prometheus config and rules (promtool check config/rules, rule unit tests),
# Kubernetes manifests against the API schemas (kubernetes-validate, strict), the chorus TOML
# configs against the flags in src/, compose.yaml, the systemd units (when systemd-analyze is
# there), Grafana provisioning and dashboards (JSON, and every query's PromQL through promtool),
# and that every chorus_* metric a dashboard or rule uses exists:
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
        elif inner == "ListenUrl":
            if not (isinstance(v, str) and re.fullmatch(r"(http|https|h3)://(\[[0-9a-fA-F:.]+\]|[^/:\[\]]+):[0-9]{1,5}/?", v)):
                err(f"{rel(path)}: {key} = {v!r}: not a listen URL (http://, https://, h3://HOST:PORT)")
        elif not isinstance(v, str):
            err(f"{rel(path)}: {key} = {v!r}: expected a string")
    if key in ("upstream", "parent"):
        for v in values:
            if not (isinstance(v, str) and re.fullmatch(r"(http|https|h3)://[^/]+:[0-9]{1,5}/?", v)):
                err(f"{rel(path)}: {key} = {v!r}: expected http://, https:// or h3://HOST:PORT")


def cmd_toml():
    try:
        import tomllib  # Python >= 3.11
    except ImportError:
        try:
            import tomli as tomllib
        except ImportError:
            err("reading TOML needs Python >= 3.11 (tomllib) or the tomli package (pip install tomli)")
            done("the chorus TOML configs")
    cmds = command_flags()
    done("reading the chorus flags")
    files = [("systemd/edge.toml", "edge"), ("systemd/origin.toml", "origin"),
             ("k8s/config/edge.toml", "edge"), ("k8s/config/origin.toml", "origin")]
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
        mem_limit = parse_quantity(edge_c.get("resources", {}).get("limits", {}).get("memory", ""))
        mem = parse_size(edge_cfg.get("cache_mem_size", "512MiB"))
        if mem_limit is None or mem is None or mem > 0.75 * mem_limit:
            err(f"deploy/k8s: cache_mem_size {edge_cfg.get('cache_mem_size')} must leave room (>= 25%) in the "
                f"edge container's memory limit {edge_c.get('resources', {}).get('limits', {}).get('memory')}")
        else:
            print(f"  k8s edge: cache_mem_size {mem / 2**30:.1f} GiB fits the memory limit {mem_limit / 2**30:.1f} GiB")
    done("the chorus TOML configs")


# ---- compose.yaml ----

def cmd_compose():
    path = os.path.join(DEPLOY, "compose.yaml")
    try:
        doc = yaml.safe_load(open(path))
    except yaml.YAMLError as e:
        err(f"{rel(path)}: not valid YAML: {e}")
        done("compose.yaml")
    services = doc.get("services") or {}
    volumes = set((doc.get("volumes") or {}).keys())
    for want in ("origin", "edge-1", "edge-2", "prometheus", "grafana"):
        if want not in services:
            err(f"{rel(path)}: no service {want!r}")
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
    print(f"  {rel(path)}: {len(services)} services, {len(volumes)} volumes")
    done("compose.yaml")


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
    {"toml": lambda: cmd_toml(), "compose": lambda: cmd_compose(),
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
kubernetes-validate -k "$K8S_VERSION" --strict k8s/origin.yaml k8s/edge.yaml k8s/tracker-redis.yaml || fail "deploy/k8s: manifests do not validate"
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize k8s >"$TMP/k8s-rendered.yaml" || fail "deploy/k8s: kubectl kustomize failed"
  kubernetes-validate -k "$K8S_VERSION" --strict "$TMP/k8s-rendered.yaml" || fail "deploy/k8s: the kustomize output does not validate"
else
  echo "  note: no kubectl, so kustomization.yaml is not rendered (kubectl kustomize deploy/k8s)"
fi

step "chorus TOML configs (keys and values against the flags in src/)"
pycheck toml

step "Compose file (YAML, services, volumes, bind mounts)"
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
  if ((sd_version >= 250)); then
    for u in "$TMP"/systemd/*.service; do
      # --threshold is exposure x 10: fail above an exposure of 3.0 ("OK" is below 4).
      score="$(systemd-analyze security --offline=true --threshold=30 "$u" 2>/dev/null | grep -o 'exposure level for .*' || true)"
      systemd-analyze security --offline=true --threshold=30 "$u" >/dev/null 2>&1 ||
        fail "deploy/systemd/$(basename "$u"): exposure above 3.0 ($score)"
      echo "  $score"
    done
  fi
else
  echo "  note: no systemd-analyze, units not verified"
fi

printf '\nAll deployment checks passed.\n'
