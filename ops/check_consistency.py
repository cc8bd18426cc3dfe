#!/usr/bin/env python3
"""Checks that the files of ops/ agree with each other and with the daemon (ops/README.md lists
the checks): config/default.toml vs Terraform vs the Dockerfile vs ops/README.md, the module's
resources vs its locals, the Prometheus files and dashboard vs the metrics src/ exports.
What one file gets right on its own is left to the tools ops/checks.sh runs beside this
(hadolint and checkov for the Dockerfile's USER, HEALTHCHECK and base image, checkov for the
Terraform, promtool for the Prometheus files).
`--dashboard-rules FILE` also writes the dashboard's queries as recording rules, so that
`promtool check rules FILE` parses them; `--task-env dev|prod` prints the container
environment the module gives that environment with terraform.tfvars.example's values.

Terraform is parsed with python-hcl2 (the `hcl2` package checkov brings; ops/checks.sh runs this
script with checkov's virtualenv). Its dict form turns every expression into a string, so the
values compared here are computed from hcl2's parse tree by a small evaluator of the expressions
these files use (literals, templates, var./local. references, conditionals, for expressions,
join/merge/keys/sort/tostring); it fails loudly on anything else.
"""

import json
import operator
import re
import sys
import tomllib
from pathlib import Path

try:
    from hcl2.parser import hcl2
    from lark import Token, Tree
except ImportError:
    sys.exit("python-hcl2 is missing: run ops/checks.sh, or this script with its checkov virtualenv's python")

ROOT = Path(__file__).resolve().parent.parent
TF = ROOT / "ops" / "terraform"
MODULE = TF / "modules" / "realtime"

# Metrics that alert rules / dashboards may name before the daemon exports them (work in
# progress on another branch); empty when everything named is exported.
ANNOUNCED_METRICS = set()

# Seed sizing per environment (ops/README.md).
EXPECTED_SIZING = {
    "dev": {"cpu": 256, "memory": 512, "min_count": 1, "max_count": 2, "connections_per_task": 100},
    "prod": {"cpu": 256, "memory": 512, "min_count": 1, "max_count": 3, "connections_per_task": 100},
}

failures = []
passes = 0


def check(ok, what, detail=""):
    global passes
    if ok:
        passes += 1
        print(f"ok      {what}")
    else:
        failures.append(what)
        print(f"FAILED  {what}{': ' + detail if detail else ''}")


# ---- Terraform through hcl2's parse tree -------------------------------------------------------


def kids(node):
    """A node's children without the keyword and bracket tokens of hcl2's `!` rules."""
    return [c for c in node.children if isinstance(c, Tree) or c.type == "STRING_LIT"]


def name_of(node):
    """The text of an identifier (or the value of a quoted label)."""
    if isinstance(node, Token):
        return node.value[1:-1] if node.type == "STRING_LIT" else node.value
    if node.data == "expr_term":
        return name_of(kids(node)[0])
    return str(node.children[0])


class Body:
    """A block body: its `name = expression` attributes and its nested blocks."""

    def __init__(self, tree, text):
        self.text, self.attrs, self.blocks = text, {}, []
        for item in tree.children:
            if item.data == "attribute":
                self.attrs[name_of(item.children[0])] = item.children[1]
            else:
                heads = item.children[:-1]
                labels = [name_of(h) for h in heads[1:]]
                self.blocks.append((name_of(heads[0]), labels, Body(item.children[-1], text)))

    def block(self, kind, *labels):
        for k, l, body in self.blocks:
            if k == kind and l[: len(labels)] == list(labels):
                return body
        raise ValueError(f"no block {kind} {' '.join(labels)}")

    def local_node(self, name):
        """The expression of local.name (a module may have several locals blocks)."""
        for kind, _, body in self.blocks:
            if kind == "locals" and name in body.attrs:
                return body.attrs[name]
        raise ValueError(f"no local.{name}")

    def src(self, node):
        """An expression's (or a named attribute's) source, whitespace collapsed; None if absent."""
        node = self.attrs.get(node) if isinstance(node, str) and not isinstance(node, Token) else node
        if node is None:
            return None
        pos = node if isinstance(node, Token) else node.meta
        return " ".join(self.text[pos.start_pos : pos.end_pos].split())


def read_tf(directory, names=("*.tf",)):
    """One Body of all the files (a module's files share one namespace)."""
    files = sorted(p for pattern in names for p in directory.glob(pattern))
    text = "\n".join(p.read_text() for p in files) + "\n"
    return Body(hcl2.lark_parser.parse(text).children[0], text)


def parse_expression(text):
    return hcl2.lark_parser.parse(f"x = {text}\n").children[0].children[0].children[1]


def find_object(node, key):
    """The first object literal under node that has `key`: {key: value node}."""
    for tree in node.iter_subtrees_topdown():
        if tree.data == "object":
            entries = {name_of(e.children[0]): e.children[1] for e in tree.children}
            if key in entries:
                return entries
    raise ValueError(f"no object with key {key}")


FUNCTIONS = {
    "tostring": lambda v: str(v).lower() if isinstance(v, bool) else str(v),
    "join": lambda sep, items: sep.join(str(x) for x in items),
    "merge": lambda *maps: {k: v for m in maps for k, v in m.items()},
    "keys": lambda m: sorted(m),
    "sort": sorted,
}
OPERATORS = {"==": operator.eq, "!=": operator.ne, "+": operator.add, "-": operator.sub,
             "*": operator.mul, "&&": lambda a, b: a and b, "||": lambda a, b: a or b}


class Scope:
    """Variables (defaults overridden by a module call's arguments) and locals of one module."""

    def __init__(self, module, arguments=None, caller=None):
        self.vars, self.locals = {}, {}
        for kind, labels, body in module.blocks:
            if kind == "variable":
                self.vars[labels[0]] = (body.attrs.get("default"), self)
            elif kind == "locals":
                self.locals.update(body.attrs)
        for name, expr in (arguments or {}).items():
            self.vars[name] = (expr, caller or self)

    def var(self, name):
        if name not in self.vars:
            raise ValueError(f"unknown variable var.{name}")
        expr, scope = self.vars[name]
        if expr is None:
            raise ValueError(f"var.{name} has no value")
        return scope.eval(expr)

    def local(self, name):
        if name not in self.locals:
            raise ValueError(f"unknown local.{name}")
        return self.eval(self.locals[name])

    def eval(self, node, bound=None):
        bound = bound or {}
        if isinstance(node, Token):
            return self.template(node.value[1:-1], bound)
        parts = kids(node)
        kind = node.data
        if kind in ("expr_term", "arguments") and len(parts) == 1:
            return self.eval(parts[0], bound)
        if kind == "identifier":
            word = name_of(node)
            if word in ("true", "false", "null"):
                return {"true": True, "false": False, "null": None}[word]
            if word not in bound:
                raise ValueError(f"unknown name {word}")
            return bound[word]
        if kind in ("int_lit", "float_lit"):
            digits = "".join(str(c) for c in node.children)
            return float(digits) if kind == "float_lit" else int(digits)
        if kind == "tuple":
            return [self.eval(p, bound) for p in parts]
        if kind == "object":
            return {name_of(e.children[0]): self.eval(e.children[1], bound) for e in parts}
        if kind == "function_call":
            args = kids(parts[1]) if len(parts) > 1 else []
            if name_of(parts[0]) not in FUNCTIONS:
                raise ValueError(f"cannot evaluate function {name_of(parts[0])}()")
            return FUNCTIONS[name_of(parts[0])](*(self.eval(a, bound) for a in args))
        if kind == "get_attr_expr_term":
            return self.reference(parts[0], name_of(parts[1].children[0]), bound)
        if kind == "index_expr_term":
            return self.eval(parts[0], bound)[self.eval(kids(parts[1])[0], bound)]
        if kind == "conditional":
            cond, yes, no = parts
            return self.eval(yes if self.eval(cond, bound) else no, bound)
        if kind == "binary_op":
            operator, right = parts[1].children
            apply = OPERATORS[str(operator.children[0])]
            if isinstance(right, Tree) and right.data == "conditional":
                # hcl2's grammar reads `a != b ? c : d` as `a != (b ? c : d)`; Terraform, like
                # every C-like language, as `(a != b) ? c : d`.
                cond, yes, no = kids(right)
                return self.eval(yes if apply(self.eval(parts[0], bound), self.eval(cond, bound)) else no, bound)
            return apply(self.eval(parts[0], bound), self.eval(right, bound))
        if kind == "unary_op":
            value = self.eval(parts[0], bound)
            return not value if str(node.children[0]) == "!" else -value
        if kind in ("for_tuple_expr", "for_object_expr"):
            return self.for_expression(kind, parts, bound)
        raise ValueError(f"cannot evaluate {kind}")

    def reference(self, base, attribute, bound):
        word = name_of(base) if kids(base)[0].data == "identifier" else None
        if word == "var" and word not in bound:
            return self.var(attribute)
        if word == "local" and word not in bound:
            return self.local(attribute)
        if word in bound:
            return bound[word][attribute]
        raise ValueError(f"cannot evaluate a reference to {word}.{attribute}")

    def for_expression(self, kind, parts, bound):
        intro, *body = parts
        names = [name_of(c) for c in kids(intro) if c.data == "identifier"]
        collection = self.eval(next(c for c in kids(intro) if c.data != "identifier"), bound)
        condition = body.pop() if body[-1].data == "for_cond" else None
        pairs = collection.items() if isinstance(collection, dict) else enumerate(collection)
        out = {} if kind == "for_object_expr" else []
        for key, value in pairs:
            inner = dict(bound, **({names[0]: key, names[1]: value} if len(names) == 2 else {names[0]: value}))
            if condition is not None and not self.eval(kids(condition)[0], inner):
                continue
            if kind == "for_object_expr":
                out[self.eval(body[0], inner)] = self.eval(body[1], inner)
            else:
                out.append(self.eval(body[0], inner))
        return out

    def template(self, text, bound):
        """A string literal's value: its ${ ... } parts evaluated, escapes resolved."""
        out, i = [], 0
        while i < len(text):
            if text.startswith("${", i):
                depth, j = 1, i + 2
                while depth:
                    depth += {"{": 1, "}": -1}.get(text[j], 0)
                    j += 1
                value = self.eval(parse_expression(text[i + 2 : j - 1]), bound)
                out.append(FUNCTIONS["tostring"](value))
                i = j
            elif text[i] == "\\":
                out.append({"n": "\n", "t": "\t"}.get(text[i + 1], text[i + 1]))
                i += 2
            else:
                out.append(text[i])
                i += 1
        return "".join(out)


def module_scope(env, with_tfvars=False):
    """The module's Scope as environment `env` calls it (and the call's arguments)."""
    env_dir = TF / "environments" / env
    env_tf = read_tf(env_dir)
    tfvars = read_tf(env_dir, ("terraform.tfvars.example",)).attrs if with_tfvars else {}
    call = env_tf.block("module", "realtime").attrs
    caller = Scope(env_tf, tfvars)
    arguments = {k: v for k, v in call.items() if k != "source"}
    return Scope(read_tf(MODULE), arguments, caller), caller.eval(call["source"]), env_tf


def task_environment(env):
    """The container environment the module gives `env`, with terraform.tfvars.example's values."""
    scope, _, _ = module_scope(env, with_tfvars=True)
    return {k: str(v) for k, v in scope.local("environment").items() if v != ""}


# ---- checks --------------------------------------------------------------------------------------


def check_environments(config, module):
    """Each environment's resolved values against config/default.toml and the seed sizing."""
    cw, port = config["cloudwatch"], config["server"]["port"]
    cfg_dims = dict(pair.split("=", 1) for pair in cw["dimensions"].split(",") if pair)
    for env in ("dev", "prod"):
        try:
            scope, source, env_tf = module_scope(env)
            check(source == "../../modules/realtime", f"{env}: uses modules/realtime", source)
            namespace = scope.local("metric_namespace")
            expected = cw["namespace"] if env == "dev" else "zedi/prod"
            check(namespace == expected, f"{env}: CloudWatch namespace {namespace!r} == {expected!r}"
                  + (" (config cloudwatch.namespace)" if env == "dev" else ""))
            for local, key in (("metric_name", "metric_name"), ("memory_metric_name", "memory_metric_name")):
                got = scope.local(local)
                check(got == cw[key], f"{env}: local.{local} {got!r} == config cloudwatch.{key} {cw[key]!r}")
            dims = scope.local("metric_dimensions")
            check(dims == cfg_dims, f"{env}: metric dimensions {dims} == config cloudwatch.dimensions {cfg_dims}")
            dims_env = dict(p.split("=", 1) for p in scope.local("metric_dimensions_env").split(","))
            check(dims_env == cfg_dims, f"{env}: ZEDI__CLOUDWATCH__DIMENSIONS is Name=Value pairs joined by ','",
                  str(dims_env))
            check(scope.var("container_port") == port, f"{env}: container port == config server.port {port}")
            for key, want in EXPECTED_SIZING[env].items():
                got = scope.var(key)
                check(got == want, f"{env}: {key} = {want}", f"got {got}")
        except ValueError as e:
            check(False, f"{env}: resolve Terraform values", str(e))
            continue
        outputs = [labels[0] for kind, labels, _ in env_tf.blocks if kind == "output"]
        has_nat = any(k == "resource" and l[0] == "aws_nat_gateway" for k, l, _ in env_tf.blocks + module.blocks)
        check(has_nat or not any("nat" in o for o in outputs), f"{env}: no NAT output without a NAT gateway", str(outputs))


def check_task_definition(config, module):
    """The container environment and definition use the locals compared above."""
    env_map = find_object(module.local_node("environment"), "PORT")
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
        got = module.src(env_map.get(k))
        check(got == v, f"task definition env {k} = {v}", f"got {got}")
    for k in env_map:
        m = re.fullmatch(r"ZEDI__([A-Z0-9_]+?)__([A-Z0-9_]+)", k)
        if m:
            section, key = m.group(1).lower(), m.group(2).lower()
            check(key in config.get(section, {}), f"task definition env {k} is config key {section}.{key}")
    readme = (ROOT / "ops" / "README.md").read_text()
    undocumented = sorted(k for k in env_map if f"`{k}" not in readme)
    check(not undocumented, "ops/README.md names every variable the task definition sets", ", ".join(undocumented))
    container = module.block("resource", "aws_ecs_task_definition", "realtime").attrs["container_definitions"]
    check(module.src(find_object(container, "stopTimeout")["stopTimeout"]) == "local.stop_timeout_secs",
          "container stopTimeout = local.stop_timeout_secs")
    check(module.src(find_object(container, "containerPort")["containerPort"]) == "var.container_port",
          "task definition containerPort = var.container_port")
    return env_map, Scope(module).eval(find_object(container, "healthCheck")["healthCheck"])


def check_metric_users(module):
    """The scaling policy, the MemoryPressure alarm and the task role use the same metric."""
    policy = module.block("resource", "aws_appautoscaling_policy", "connections")
    target = policy.block("target_tracking_scaling_policy_configuration")
    spec = target.block("customized_metric_specification")
    check(spec.src("namespace") == "local.metric_namespace", "scaling policy namespace = local.metric_namespace")
    check(spec.src("metric_name") == "local.metric_name", "scaling policy metric_name = local.metric_name")
    check(spec.src("statistic") == '"Average"', "scaling policy statistic Average (connections per task)")
    check(spec.block("dynamic", "dimensions").src("for_each") == "local.metric_dimensions",
          "scaling policy dimensions = local.metric_dimensions")
    check(target.src("target_value") == "var.connections_per_task", "scaling target = var.connections_per_task")
    alarm = module.block("resource", "aws_cloudwatch_metric_alarm", "memory_pressure")
    for key, want in (("namespace", "local.metric_namespace"), ("metric_name", "local.memory_metric_name"),
                      ("dimensions", "local.metric_dimensions")):
        check(alarm.src(key) == want, f"MemoryPressure alarm {key} = {want}", f"got {alarm.src(key)}")
    iam = module.block("data", "aws_iam_policy_document", "task")
    conditions = [(s.block("condition").src("variable"), s.block("condition").src("values"))
                  for k, _, s in iam.blocks if k == "statement" and "cloudwatch:PutMetricData" in s.src("actions")]
    check(conditions == [('"cloudwatch:namespace"', "[local.metric_namespace]")],
          "task role: PutMetricData only with cloudwatch:namespace = local.metric_namespace", str(conditions))


def check_load_balancer(config, module, env_map):
    """Target group and service port; drain deadline vs stop timeout and deregistration delay."""
    tg = module.block("resource", "aws_lb_target_group", "realtime")
    check(tg.src("port") == "var.container_port", "target group port = var.container_port")
    path = Scope(module).eval(tg.block("health_check").attrs["path"])
    routes = {m for p in (ROOT / "src").rglob("*.rs") for m in re.findall(r'\.route\("([^"]+)"', p.read_text())}
    check(path in routes, f"target group health check {path} is a route of the daemon (src/)", str(sorted(routes)))
    check(tg.block("stickiness").src("type") == '"lb_cookie"', "target group stickiness lb_cookie")
    check(module.block("resource", "aws_lb", "this").src("idle_timeout") == "3600", "ALB idle_timeout 3600 (WebSockets)")
    service = module.block("resource", "aws_ecs_service", "realtime")
    check(service.block("load_balancer").src("container_port") == "var.container_port",
          "service load_balancer container_port = var.container_port")
    scope = Scope(module, {"environment": parse_expression('"dev"'), "aws_region": parse_expression('"x"')})
    dereg, stop = scope.eval(tg.attrs["deregistration_delay"]), scope.local("stop_timeout_secs")
    check(dereg == 30 and stop == 30, "deregistration delay 30 s and stopTimeout 30 s", f"{dereg}, {stop}")
    drain_env = env_map.get("ZEDI__SERVER__DRAIN_DEADLINE_MS")
    deadline_ms = int(scope.eval(drain_env)) if drain_env else config["server"].get("drain_deadline_ms")
    check(deadline_ms is not None and deadline_ms < stop * 1000 and deadline_ms <= dereg * 1000,
          f"drain deadline ({deadline_ms} ms) < stopTimeout ({stop} s) and <= deregistration delay ({dereg} s)")
    check(config["server"].get("drain_delay_ms", 0) == 0 or "ZEDI__SERVER__DRAIN_DELAY_MS" in env_map,
          "server.drain_delay_ms is 0 (ECS deregisters before SIGTERM) or set by the task")


def dockerfile_instructions():
    """The final stage's (instruction, arguments), continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not (current or line.strip()):
            continue
        current += line.rstrip().removesuffix("\\") + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    instructions = [(l.split(None, 1) + [""])[:2] for l in logical]
    stages = [i for i, (ins, _) in enumerate(instructions) if ins.upper() == "FROM"]
    return [(ins.upper(), args) for ins, args in instructions[stages[-1] if stages else 0 :]]


def check_dockerfile(config, health_check):
    """The image's port, ZEDI__ variables and HEALTHCHECK against the config and the task."""
    port, final = config["server"]["port"], dockerfile_instructions()
    exposed = [a.split()[0].split("/")[0] for ins, a in final if ins == "EXPOSE"]
    check(exposed == [str(port)], f"Dockerfile: EXPOSE {port} (config server.port)", str(exposed))
    envs = " ".join(a for ins, a in final if ins == "ENV")
    m = re.search(r"\bPORT=(\d+)", envs)
    check(m is not None and int(m.group(1)) == port, f"Dockerfile: ENV PORT={port} (config server.port)", envs)
    for section, key in re.findall(r"\bZEDI__([A-Z0-9_]+?)__([A-Z0-9_]+)=", envs):
        check(key.lower() in config.get(section.lower(), {}),
              f"Dockerfile: ENV ZEDI__{section}__{key} is config key {section.lower()}.{key.lower()}")
    image = {}
    for ins, args in final:
        if ins == "HEALTHCHECK":
            options, command = args.split("CMD", 1)
            image = {k: v for k, v in re.findall(r"--([a-z-]+)=(\S+)", options)}
            image["command"] = ["CMD"] + json.loads(command)
    task = {"command": health_check.get("command"), "interval": f"{health_check.get('interval')}s",
            "timeout": f"{health_check.get('timeout')}s", "retries": str(health_check.get("retries")),
            "start-period": f"{health_check.get('startPeriod')}s"}
    check(image == task, "Dockerfile HEALTHCHECK == the task definition's healthCheck", f"{image} vs {task}")


def check_metrics(port, argv):
    """Scrape ports; every zedi_* metric the alerts and dashboards name is exported by src/."""
    prom = (ROOT / "ops" / "prometheus" / "prometheus.yml").read_text()
    check(re.search(rf"^\s*port:\s*{port}\s*$", prom, re.M) is not None, f"prometheus.yml dns_sd port {port}")
    local = (ROOT / "ops" / "prometheus" / "prometheus-local.yml").read_text()
    check(f"127.0.0.1:{port}" in local, f"prometheus-local.yml target 127.0.0.1:{port}")
    exported = exported_metrics()
    check(len(exported) >= 10, f"found the daemon's metric registrations in src/ ({len(exported)})")
    known = exported | ANNOUNCED_METRICS
    texts = {"ops/prometheus/alerts.yml": (ROOT / "ops/prometheus/alerts.yml").read_text()}
    exprs = []
    for d in sorted((ROOT / "ops" / "grafana").glob("*.json")):
        try:
            dash = json.loads(d.read_text())
        except json.JSONDecodeError as e:
            check(False, f"{d.relative_to(ROOT)} is JSON", str(e))
            continue
        found = [t["expr"] for p in dash.get("panels", []) for t in p.get("targets", [])]
        exprs += found
        texts[str(d.relative_to(ROOT))] = "\n".join(found)
    for where, text in texts.items():
        used = set()
        for name in re.findall(r"\b(zedi_[a-z0-9_]+)", text):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            used.add(base if base in known else name)
        unknown = sorted(used - known)
        check(not unknown, f"{where}: every zedi_* metric is exported or announced", ", ".join(unknown))
    if len(argv) == 3 and argv[1] == "--dashboard-rules":
        rules = ["groups:", "  - name: dashboard-queries", "    rules:"]
        for i, e in enumerate(exprs):
            e = e.replace("$__rate_interval", "5m").replace("$environment", "prod")
            rules += [f"      - record: dashboard:query:{i}", f"        expr: {json.dumps(e)}"]
        Path(argv[2]).write_text("\n".join(rules) + "\n")


def exported_metrics():
    """Names registered in src/ (the metrics registry has the "zedi" prefix)."""
    names = set()
    for p in (ROOT / "src").rglob("*.rs"):
        text = p.read_text(errors="replace")
        if "prometheus" in text or "Opts::new" in text or "&r," in text:
            names |= {"zedi_" + m for m in re.findall(r'"([a-z][a-z0-9_]*)"\s*,\s*"[^"]* [^"]*"', text)}
        # src/metrics.rs declares most metrics as table rows, the field name being the metric's:
        # `name: IntCounterVec = counter_vec("help", ...)`.
        names |= {"zedi_" + m for m in re.findall(
            r"^\s*([a-z][a-z0-9_]*):\s*(?:Int)?(?:Counter|Gauge|Histogram)(?:Vec)?\s*=\s*"
            r"(?:counter|gauge|histogram)(?:_vec)?\(", text, re.M)}
    return names


def main(argv):
    if len(argv) == 3 and argv[1] == "--task-env":
        for k, v in sorted(task_environment(argv[2]).items()):
            print(f"{k}={v}")
        return 0
    config = tomllib.loads((ROOT / "config" / "default.toml").read_text())
    try:
        module = read_tf(MODULE)
        check_environments(config, module)
        env_map, health_check = check_task_definition(config, module)
        check_metric_users(module)
        check_load_balancer(config, module, env_map)
        check_dockerfile(config, health_check)
    except (ValueError, KeyError) as e:
        check(False, "read the Terraform module and the Dockerfile", f"{type(e).__name__}: {e}")
    check_metrics(config["server"]["port"], argv)
    total = passes + len(failures)
    print(f"check_consistency: {len(failures)} of {total} checks failed" if failures
          else f"check_consistency: all {total} checks ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
