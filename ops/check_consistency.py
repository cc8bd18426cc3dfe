#!/usr/bin/env python3
"""Checks that ops/ (Terraform, Dockerfile, Prometheus, Grafana) agrees with the daemon.

Standard library only. Run from anywhere:  python3 ops/check_consistency.py
  - the port, CloudWatch namespace (dev environment), metric names and dimensions that Terraform
    resolves equal config/default.toml; the task definition, scaling policy and IAM condition use
    those same values, and so does the MemoryPressure alarm; every ZEDI__SECTION__KEY the task
    sets is a real config key;
  - the seed sizing of dev and prod; no NAT output without a NAT gateway;
  - the Dockerfile: non-root USER, HEALTHCHECK through `zedi-sync healthcheck`, EXPOSE and PORT
    equal to the config's port, `cargo build --locked --bin zedi-sync`;
  - every zedi_* metric named by the alert rules and the dashboard is exported by src/ or
    announced (ANNOUNCED_METRICS, for metrics of work in progress);
  - the daemon's drain deadline fits in the ECS stop timeout and the deregistration delay.
`--dashboard-rules FILE` also writes the dashboard's queries as recording rules, so that
`promtool check rules FILE` parses them (ops/checks.sh does).

Terraform is read with a small HCL reader that understands what these files use (blocks,
`name = value` attributes, string templates of var./local. references, maps): enough to
resolve the values compared here, and it fails loudly on anything it cannot resolve.
"""

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TF = ROOT / "ops" / "terraform"
MODULE = TF / "modules" / "realtime"

# Metrics that alert rules / dashboards may name before the daemon exports them (work in
# progress on another branch); empty when everything named is exported.
ANNOUNCED_METRICS = set()

# Seed sizing per environment.
EXPECTED_SIZING = {
    "dev": {"cpu": 256, "memory": 512, "min_count": 1, "max_count": 2, "connections_per_task": 100},
    "prod": {"cpu": 256, "memory": 512, "min_count": 1, "max_count": 3, "connections_per_task": 100},
}

failures = []
passes = 0
CONFIG = {}


def check(ok, what, detail=""):
    global passes
    if ok:
        passes += 1
        print(f"ok      {what}")
    else:
        failures.append(what)
        print(f"FAILED  {what}{': ' + detail if detail else ''}")


# ---- a small HCL reader ------------------------------------------------------------------------


def strip_comments(text):
    """Removes #, // and /* */ comments, keeping strings intact."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = skip_string(text, i)
            out.append(text[i:j])
            i = j
        elif c == "#" or text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def skip_string(text, i):
    """Index just past the string literal starting at text[i] == '"' (handles ${ ... })."""
    i += 1
    while True:
        c = text[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i + 1
        elif text.startswith("${", i):
            i = match_close(text, i + 1)
        else:
            i += 1


def match_close(text, i):
    """text[i] is an opening bracket; returns the index just past its closing one."""
    pairs = {"{": "}", "[": "]", "(": ")"}
    stack = [pairs[text[i]]]
    i += 1
    while stack:
        c = text[i]
        if c == '"':
            i = skip_string(text, i)
            continue
        if c in pairs:
            stack.append(pairs[c])
        elif c == stack[-1]:
            stack.pop()
        i += 1
    return i


def split_top(text, sep):
    """Splits text at the occurrences of sep that are outside strings and brackets."""
    parts, depth, i, last = [], 0, 0, 0
    while i < len(text):
        c = text[i]
        if c == '"':
            i = skip_string(text, i)
            continue
        if c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[last:i].strip())
            i += len(sep)
            last = i
            continue
        i += 1
    parts.append(text[last:].strip())
    return parts


BLOCK_HEAD = re.compile(r'^[ \t]*([A-Za-z_][\w-]*)((?:[ \t]+"[^"\n]*")*)[ \t]*\{', re.M)


def blocks(text):
    """Top-level and nested blocks: yields (type, labels, body) for every block header."""
    for m in BLOCK_HEAD.finditer(text):
        start = m.end() - 1
        end = match_close(text, start)
        yield m.group(1), re.findall(r'"([^"]*)"', m.group(2)), text[start + 1 : end - 1]


def attributes(body):
    """`name = expression` pairs at the top level of a block body."""
    attrs, i, n = {}, 0, len(body)
    depth_openers = "{[("
    while i < n:
        m = re.compile(r"[ \t]*([A-Za-z_][\w-]*)[ \t]*=(?!=)[ \t]*").match(body, i)
        line_end = body.find("\n", i)
        line_end = n if line_end < 0 else line_end
        if not m or m.start() != i:
            # Not an attribute line: skip it, or the whole nested block it opens.
            j = i
            while j < line_end:
                if body[j] == '"':
                    j = skip_string(body, j)
                elif body[j] in depth_openers:
                    j = match_close(body, j)
                    line_end = max(line_end, body.find("\n", j) if body.find("\n", j) >= 0 else n)
                else:
                    j += 1
            i = line_end + 1
            continue
        j = m.end()
        while j < n and body[j] != "\n":
            if body[j] == '"':
                j = skip_string(body, j)
            elif body[j] in depth_openers:
                j = match_close(body, j)
            else:
                j += 1
        attrs[m.group(1)] = body[m.end() : j].strip()
        i = j + 1
    return attrs


def read_tf(directory):
    text = "\n".join(strip_comments(p.read_text()) for p in sorted(directory.glob("*.tf")))
    return text


class Scope:
    """Variables (defaults overridden by a module call's arguments) and locals of one module."""

    def __init__(self, module_text, arguments=None, caller=None):
        self.vars, self.locals, self.caller = {}, {}, caller
        for kind, labels, body in blocks(module_text):
            if kind == "variable":
                default = attributes(body).get("default")
                self.vars[labels[0]] = ("expr", default, None)
            elif kind == "locals":
                self.locals.update(attributes(body))
        for name, expr in (arguments or {}).items():
            self.vars[name] = ("expr", expr, caller)

    def var(self, name):
        if name not in self.vars:
            raise ValueError(f"unknown variable var.{name}")
        _, expr, scope = self.vars[name]
        if expr is None:
            raise ValueError(f"var.{name} has no value")
        return (scope or self).eval(expr)

    def local(self, name):
        if name not in self.locals:
            raise ValueError(f"unknown local.{name}")
        return self.eval(self.locals[name])

    def ref(self, ref):
        kind, name = ref.split(".", 1)
        return self.var(name) if kind == "var" else self.local(name)

    def eval(self, expr):
        expr = expr.strip()
        if re.fullmatch(r"-?\d+(\.\d+)?", expr):
            return float(expr) if "." in expr else int(expr)
        if expr in ("true", "false"):
            return expr == "true"
        if expr == "null":
            return None
        if re.fullmatch(r"(var|local)\.[A-Za-z_]\w*", expr):
            return self.ref(expr)
        m = re.fullmatch(r"tostring\((.*)\)", expr, re.S)
        if m:
            return str(self.eval(m.group(1)))
        m = re.fullmatch(r"join\((.*)\)", expr, re.S)
        if m:
            sep, items = split_top(m.group(1), ",")
            return self.eval(sep).join(str(x) for x in self.eval(items))
        cond = split_top(expr, "?")
        if len(cond) == 2:
            branches = split_top(cond[1], ":")
            for op in ("!=", "=="):
                sides = split_top(cond[0], op)
                if len(sides) == 2 and len(branches) == 2:
                    equal = self.eval(sides[0]) == self.eval(sides[1])
                    return self.eval(branches[0] if equal == (op == "==") else branches[1])
        m = re.fullmatch(r'\[for k in sort\(keys\((local\.\w+)\)\) : "\$\{k\}=\$\{\1\[k\]\}"\]', expr)
        if m:  # the Name=Value list of metric_dimensions_env
            d = self.ref(m.group(1))
            return [f"{k}={d[k]}" for k in sorted(d)]
        if expr.startswith("[") and match_close(expr, 0) == len(expr):
            return [self.eval(x) for x in split_top(expr[1:-1], ",") if x.strip()]
        if expr.startswith('"') and skip_string(expr, 0) == len(expr):
            inner = expr[1:-1]

            def sub(mm):
                value = self.ref(mm.group(1))
                return str(value)

            if re.search(r"\$\{(?!(?:var|local)\.[A-Za-z_]\w*\})", inner):
                raise ValueError(f"cannot evaluate template {expr}")
            return re.sub(r"\$\{((?:var|local)\.[A-Za-z_]\w*)\}", sub, inner)
        if expr.startswith("{") and match_close(expr, 0) == len(expr):
            return {k: self.eval(v) for k, v in attributes(expr[1:-1].replace(",", "\n")).items()}
        raise ValueError(f"cannot evaluate {expr!r}")


def find_block(text, kind, *labels):
    for k, l, body in blocks(text):
        if k == kind and l[: len(labels)] == list(labels):
            return body
    raise ValueError(f"no block {kind} {' '.join(labels)}")


def nested(body, kind):
    for k, _, b in blocks(body):
        if k == kind:
            return b
    raise ValueError(f"no nested block {kind}")


# ---- checks --------------------------------------------------------------------------------------


def task_environment(env):
    """The container environment the module gives `env`, with terraform.tfvars.example's values."""
    env_dir = TF / "environments" / env
    env_text = read_tf(env_dir)
    tfvars = attributes(strip_comments((env_dir / "terraform.tfvars.example").read_text()))
    call = attributes(find_block(env_text, "module", "realtime"))
    caller = Scope(env_text, tfvars)
    scope = Scope(read_tf(MODULE), {k: v for k, v in call.items() if k != "source"}, caller)
    expr = scope.locals["environment"]
    start = expr.find("in {") + 3
    entries = attributes(expr[start + 1 : match_close(expr, start) - 1])
    values = {k: scope.eval(v) for k, v in entries.items()}
    return {k: str(v) for k, v in values.items() if v != ""}


def main(argv):
    if len(argv) == 3 and argv[1] == "--task-env":
        for k, v in sorted(task_environment(argv[2]).items()):
            print(f"{k}={v}")
        return 0
    global CONFIG
    config = CONFIG = tomllib.loads((ROOT / "config" / "default.toml").read_text())
    port = config["server"]["port"]
    cw = config["cloudwatch"]
    cfg_dims = dict(pair.split("=", 1) for pair in cw["dimensions"].split(",") if pair)

    module_text = read_tf(MODULE)

    # -- each environment's resolved values against the daemon's defaults
    for env in ("dev", "prod"):
        env_text = read_tf(TF / "environments" / env)
        call = attributes(find_block(env_text, "module", "realtime"))
        check(call.get("source", "").strip('"') == "../../modules/realtime", f"{env}: uses modules/realtime")
        caller = Scope(env_text)
        scope = Scope(module_text, {k: v for k, v in call.items() if k != "source"}, caller)
        try:
            namespace = scope.local("metric_namespace")
            expected_ns = cw["namespace"] if env == "dev" else f"{scope.var('project')}/{env}"
            check(namespace == expected_ns, f"{env}: CloudWatch namespace {namespace!r} == {expected_ns!r}"
                  + (" (config/default.toml cloudwatch.namespace)" if env == "dev" else ""))
            if env == "prod":
                check(namespace == "zedi/prod", f"prod: namespace is zedi/prod", namespace)
            name = scope.local("metric_name")
            check(name == cw["metric_name"], f"{env}: metric name {name!r} == config cloudwatch.metric_name {cw['metric_name']!r}")
            mem = scope.local("memory_metric_name")
            check(mem == cw["memory_metric_name"],
                  f"{env}: memory metric name {mem!r} == config cloudwatch.memory_metric_name {cw['memory_metric_name']!r}")
            dims = scope.local("metric_dimensions")
            check(dims == cfg_dims, f"{env}: metric dimensions {dims} == config cloudwatch.dimensions {cfg_dims}")
            tf_port = scope.var("container_port")
            check(tf_port == port, f"{env}: container port {tf_port} == config server.port {port}")
            for key, want in EXPECTED_SIZING[env].items():
                got = scope.var(key)
                check(got == want, f"{env}: {key} = {want}", f"got {got}")
        except ValueError as e:
            check(False, f"{env}: resolve Terraform values", str(e))
        outputs = [l[0] for k, l, _ in blocks(env_text) if k == "output"]
        has_nat = bool(re.search(r'resource\s+"aws_nat_gateway"', env_text + module_text))
        check(has_nat or not any("nat" in o for o in outputs), f"{env}: no NAT output without a NAT gateway", str(outputs))

    # -- the module wires those locals everywhere they matter
    all_locals = {}
    for kind, _, body in blocks(module_text):
        if kind == "locals":
            all_locals.update(attributes(body))
    env_expr = all_locals.get("environment", "")
    start = env_expr.find("in {") + 3
    env_map = attributes(env_expr[start + 1 : match_close(env_expr, start) - 1]) if start > 2 else {}
    want_env = {
        "PORT": "tostring(var.container_port)",
        "ZEDI__CLOUDWATCH__MODE": '"api"',
        "ZEDI__CLOUDWATCH__NAMESPACE": "local.metric_namespace",
        "ZEDI__CLOUDWATCH__METRIC_NAME": "local.metric_name",
        "ZEDI__CLOUDWATCH__DIMENSIONS": "local.metric_dimensions_env",
        "ZEDI__CLOUDWATCH__MEMORY_METRIC_NAME": "local.memory_metric_name",
        "ZEDI__LOG__FORMAT": '"json"',
    }
    for k, v in want_env.items():
        check(env_map.get(k) == v, f"task definition env {k} = {v}", f"got {env_map.get(k)}")
    dims_env = all_locals.get("metric_dimensions_env", "")
    check('"${k}=${local.metric_dimensions[k]}"' in dims_env and 'join(","' in dims_env,
          "ZEDI__CLOUDWATCH__DIMENSIONS is Name=Value pairs joined by ','", dims_env)
    for k in env_map:
        m = re.fullmatch(r"ZEDI__([A-Z0-9_]+?)__([A-Z0-9_]+)", k)
        if m:
            section, key = m.group(1).lower(), m.group(2).lower()
            check(key in config.get(section, {}), f"task definition env {k} is config key {section}.{key}")

    policy = find_block(module_text, "resource", "aws_appautoscaling_policy", "connections")
    spec = attributes(nested(policy, "customized_metric_specification"))
    check(spec.get("namespace") == "local.metric_namespace", "scaling policy namespace = local.metric_namespace")
    check(spec.get("metric_name") == "local.metric_name", "scaling policy metric_name = local.metric_name")
    check(spec.get("statistic") == '"Average"', "scaling policy statistic Average (connections per task)")
    check("for_each = local.metric_dimensions" in policy, "scaling policy dimensions = local.metric_dimensions")
    target = attributes(nested(policy, "target_tracking_scaling_policy_configuration"))
    check(target.get("target_value") == "var.connections_per_task", "scaling target = var.connections_per_task")

    alarm = attributes(find_block(module_text, "resource", "aws_cloudwatch_metric_alarm", "memory_pressure"))
    for key, want in (("namespace", "local.metric_namespace"), ("metric_name", "local.memory_metric_name"),
                      ("dimensions", "local.metric_dimensions")):
        check(alarm.get(key) == want, f"MemoryPressure alarm {key} = {want}", f"got {alarm.get(key)}")

    iam = find_block(module_text, "data", "aws_iam_policy_document", "task")
    check(re.search(r'variable\s*=\s*"cloudwatch:namespace"\s*values\s*=\s*\[local\.metric_namespace\]', iam) is not None
          and '"cloudwatch:PutMetricData"' in iam,
          "task role: PutMetricData only with cloudwatch:namespace = local.metric_namespace")

    tg = find_block(module_text, "resource", "aws_lb_target_group", "realtime")
    tga = attributes(tg)
    check(tga.get("port") == "var.container_port", "target group port = var.container_port")
    hc = attributes(nested(tg, "health_check"))
    check(hc.get("path") == '"/health"', "target group health check GET /health")
    sticky = attributes(nested(tg, "stickiness"))
    check(sticky.get("type") == '"lb_cookie"', "target group stickiness lb_cookie")
    scope = Scope(module_text, {"environment": '"dev"', "aws_region": '"x"'})
    dereg = scope.eval(tga.get("deregistration_delay", "null"))
    stop = scope.local("stop_timeout_secs")
    check(dereg == 30 and stop == 30, "deregistration delay 30 s and stopTimeout 30 s", f"{dereg}, {stop}")
    check(re.search(r"stopTimeout\s*=\s*local\.stop_timeout_secs", module_text) is not None,
          "container stopTimeout = local.stop_timeout_secs")
    deadline_ms = config["server"].get("drain_deadline_ms")
    drain_env = env_map.get("ZEDI__SERVER__DRAIN_DEADLINE_MS")
    task_deadline_ms = int(scope.eval(drain_env)) if drain_env else deadline_ms
    check(task_deadline_ms is not None and task_deadline_ms < stop * 1000 and task_deadline_ms <= dereg * 1000,
          f"drain deadline ({task_deadline_ms} ms) < stopTimeout ({stop} s) and <= deregistration delay ({dereg} s)")
    check(config["server"].get("drain_delay_ms", 0) == 0 or "ZEDI__SERVER__DRAIN_DELAY_MS" in env_map,
          "server.drain_delay_ms is 0 (ECS deregisters before SIGTERM) or set by the task")
    lb = attributes(find_block(module_text, "resource", "aws_lb", "this"))
    check(lb.get("idle_timeout") == "3600", "ALB idle_timeout 3600 (WebSockets)")
    svc = find_block(module_text, "resource", "aws_ecs_service", "realtime")
    check(attributes(nested(svc, "load_balancer")).get("container_port") == "var.container_port",
          "service load_balancer container_port = var.container_port")
    check(re.search(r"containerPort\s*=\s*var\.container_port", module_text) is not None,
          "task definition containerPort = var.container_port")

    # -- Dockerfile
    dockerfile(port)

    # -- Prometheus targets use the port
    prom = (ROOT / "ops" / "prometheus" / "prometheus.yml").read_text()
    check(re.search(rf"^\s*port:\s*{port}\s*$", prom, re.M) is not None, f"prometheus.yml dns_sd port {port}")
    local = (ROOT / "ops" / "prometheus" / "prometheus-local.yml").read_text()
    check(f"127.0.0.1:{port}" in local, f"prometheus-local.yml target 127.0.0.1:{port}")

    # -- metric names in alerts and dashboards
    exported = exported_metrics()
    check(len(exported) >= 10, f"found the daemon's metric registrations in src/ ({len(exported)})")
    known = exported | ANNOUNCED_METRICS
    texts = {"ops/prometheus/alerts.yml": (ROOT / "ops/prometheus/alerts.yml").read_text()}
    dashboards = sorted((ROOT / "ops" / "grafana").glob("*.json"))
    exprs = []
    for d in dashboards:
        try:
            dash = json.loads(d.read_text())
        except json.JSONDecodeError as e:
            check(False, f"{d.relative_to(ROOT)} is JSON", str(e))
            continue
        check(True, f"{d.relative_to(ROOT)} is JSON")
        exprs += [t["expr"] for p in dash.get("panels", []) for t in p.get("targets", [])]
        texts[str(d.relative_to(ROOT))] = "\n".join(t["expr"] for p in dash.get("panels", []) for t in p.get("targets", []))
    for where, text in texts.items():
        used = {re.sub(r"_(bucket|sum|count)$", "", m) if re.sub(r"_(bucket|sum|count)$", "", m) in known else m
                for m in re.findall(r"\b(zedi_[a-z0-9_]+)", text)}
        unknown = sorted(used - known)
        check(not unknown, f"{where}: every zedi_* metric is exported or announced", ", ".join(unknown))

    if len(argv) == 3 and argv[1] == "--dashboard-rules":
        rules = ["groups:", "  - name: dashboard-queries", "    rules:"]
        for i, e in enumerate(exprs):
            e = e.replace("$__rate_interval", "5m").replace("$environment", "prod")
            rules += [f"      - record: dashboard:query:{i}", f"        expr: {json.dumps(e)}"]
        Path(argv[2]).write_text("\n".join(rules) + "\n")

    total = passes + len(failures)
    print(f"check_consistency: {len(failures)} of {total} checks failed" if failures
          else f"check_consistency: all {total} checks ok")
    return 1 if failures else 0


def dockerfile(port):
    text = (ROOT / "Dockerfile").read_text()
    # Join continuation lines, drop comments and blanks.
    logical, cur = [], ""
    for line in text.splitlines():
        if not cur and (line.lstrip().startswith("#") or not line.strip()):
            continue
        if line.lstrip().startswith("#"):
            continue
        cur += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            logical.append(cur.strip())
            cur = ""
    valid = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
             "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
    instrs = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in logical]
    bad = [i for i, _ in instrs if i not in valid]
    check(not bad and instrs and instrs[0][0] in ("FROM", "ARG"), "Dockerfile: only valid instructions", str(bad))
    stages = [i for i, (ins, _) in enumerate(instrs) if ins == "FROM"]
    check(len(stages) >= 2, "Dockerfile: multi-stage build", f"{len(stages)} stage(s)")
    final = instrs[stages[-1]:] if stages else []
    users = [a.strip() for ins, a in final if ins == "USER"]
    check(bool(users) and users[-1].split(":")[0] not in ("root", "0"), "Dockerfile: runtime stage runs as a non-root USER", str(users))
    exposed = [a.split()[0].split("/")[0] for ins, a in final if ins == "EXPOSE"]
    check(exposed == [str(port)], f"Dockerfile: EXPOSE {port} (config server.port)", str(exposed))
    envs = " ".join(a for ins, a in final if ins == "ENV")
    m = re.search(r"\bPORT=(\d+)", envs)
    check(m is not None and int(m.group(1)) == port, f"Dockerfile: ENV PORT={port}", envs)
    for name in re.findall(r"\bZEDI__([A-Z0-9_]+?)__([A-Z0-9_]+)=", envs):
        section, key = name[0].lower(), name[1].lower()
        check(key in CONFIG.get(section, {}), f"Dockerfile: ENV ZEDI__{name[0]}__{name[1]} is config key {section}.{key}")
    hcs = [a for ins, a in final if ins == "HEALTHCHECK"]
    check(len(hcs) == 1 and re.search(r'CMD \["[^"]*zedi-sync", "healthcheck"\]', hcs[0]) is not None,
          "Dockerfile: HEALTHCHECK runs `zedi-sync healthcheck` (no curl)", str(hcs))
    builds = [a for ins, a in instrs if ins == "RUN" and "cargo build" in a]
    check(builds and all("--release --locked --bin zedi-sync" in b for b in builds),
          "Dockerfile: cargo build --release --locked --bin zedi-sync", str(builds))
    entry = [a for ins, a in final if ins == "ENTRYPOINT"]
    copies = [a for ins, a in final if ins == "COPY" and "--from=" in a]
    check(len(entry) == 1 and copies and json.loads(entry[0])[0] == copies[-1].split()[-1],
          "Dockerfile: ENTRYPOINT is the binary copied from the builder", f"{entry} {copies}")


def exported_metrics():
    """Names registered in src/ (metrics registry has the "zedi" prefix)."""
    names = set()
    for p in (ROOT / "src").rglob("*.rs"):
        text = p.read_text(errors="replace")
        if "prometheus" not in text and "Opts::new" not in text and "&r," not in text:
            continue
        for m in re.finditer(r'"([a-z][a-z0-9_]*)"\s*,\s*"[^"]* [^"]*"', text):
            names.add("zedi_" + m.group(1))
    return names


if __name__ == "__main__":
    sys.exit(main(sys.argv))
