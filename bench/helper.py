# Helpers of bench/run.sh, bench/filters.sh and bench/instructions.sh: free ports, parsing of
# wrk, h2load and weft-loadgen output, per-run records, and the final tables and JSON.
#
#   python3 bench/helper.py ports N
#   python3 bench/helper.py wrk|h2load|loadgen OUTPUT_FILE          -> one JSON line
#   python3 bench/helper.py record PARSED TARGET CLK_TCK ...         -> one JSON line
#   python3 bench/helper.py tag KEY=VALUE... < JSON line             -> the line with fields added
#   python3 bench/helper.py report RESULTS META OUT_JSON             (SCENARIO=proxy)
#   python3 bench/helper.py report_filters RESULTS META OUT_JSON     (SCENARIO=filters)
#   python3 bench/helper.py report_instructions RESULTS META OUT_JSON (bench/instructions.sh)
#   python3 bench/helper.py split CALLGRIND_OUT PERF_MAP REPO_DIR    -> instructions by category
import bisect, json, os, re, socket, sys

def ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))

UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}

def to_us(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None

def parse_wrk(path):
    text = open(path).read()
    r = {"tool": "wrk"}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([0-9.]+\w+),", text)
    r["requests"] = int(m.group(1)) if m else 0
    r["elapsed_us"] = to_us(m.group(2)) if m else None
    dist = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", text, re.M))
    for pct in ("50", "75", "90", "99"):
        r[f"p{pct}_us"] = to_us(dist[pct]) if pct in dist else None
    m = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        r["mean_us"], r["stdev_us"], r["max_us"] = (to_us(x) for x in m.groups())
    errors = {}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(v):
                errors["socket_" + k] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m and int(m.group(1)):
        errors["non_2xx_3xx"] = int(m.group(1))
    if r["rps"] is None:
        errors["unparsable_output"] = 1
    r["errors"] = errors
    print(json.dumps(r))

def parse_h2load(path):
    text = open(path).read()
    r = {"tool": "h2load"}
    m = re.search(r"finished in ([0-9.]+\w+), ([0-9.]+) req/s", text)
    r["rps"] = float(m.group(2)) if m else None
    r["elapsed_us"] = to_us(m.group(1)) if m else None
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    errors = {}
    if m:
        total, started, done, ok, failed, errored, timeout = map(int, m.groups())
        r["requests"] = done
        for k, v in (("failed", failed), ("errored", errored), ("timeout", timeout)):
            if v:
                errors[k] = v
    else:
        r["requests"] = 0
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        for k, v in zip(("3xx", "4xx", "5xx"), map(int, m.groups()[1:])):
            if v:
                errors["status_" + k] = v
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if m:
        r["min_us"], r["max_us"], r["mean_us"], r["stdev_us"] = (to_us(x) for x in m.groups())
    # h2load reports no percentiles.
    r["p50_us"] = r["p99_us"] = None
    if r["rps"] is None:
        errors["unparsable_output"] = 1
    r["errors"] = errors
    print(json.dumps(r))

def record(parsed_path, target, tck, proxy_ticks, upstream_ticks, load_ticks, busy_ticks,
           wall_ticks, ncpu, others, proxy_user_ticks=None):
    r = json.load(open(parsed_path))
    tck = float(tck)
    req = r["requests"]
    per_req = lambda ticks: (int(ticks) / tck) * 1e6 / req if req else None
    r["target"] = target
    r["cpu_seconds"] = int(proxy_ticks) / tck
    r["cpu_us_per_req"] = per_req(proxy_ticks)
    # The same split into user space and the kernel (the split is the kernel's tick sampling,
    # scaled to the exact total; over a run of seconds it is good to a few percent).
    if proxy_user_ticks is not None:
        r["user_us_per_req"] = per_req(proxy_user_ticks)
        r["sys_us_per_req"] = per_req(int(proxy_ticks) - int(proxy_user_ticks))
    r["upstream_cpu_seconds"] = int(upstream_ticks) / tck
    r["upstream_cpu_us_per_req"] = per_req(upstream_ticks)
    r["loadgen_cpu_seconds"] = int(load_ticks) / tck
    wall = int(wall_ticks) / tck / int(ncpu)  # /proc/stat counts ticks on every CPU
    busy = int(busy_ticks) / tck
    r["host_busy_cores"] = busy / wall if wall else None
    # CPU used during the run by anything other than the load generator, upstream and proxy:
    # (for direct the proxy is the upstream: count it once)
    own = int(proxy_ticks) + (0 if target == "direct" else int(upstream_ticks)) + int(load_ticks)
    other = busy - own / tck
    r["other_busy_cores"] = max(other, 0.0) / wall if wall else None
    r["concurrent_processes"] = [p for p in others.split(",") if p]
    r["flagged"] = bool(r["errors"]) or req == 0
    print(json.dumps(r))

def fmt_us(v):
    if v is None:
        return "-"
    return f"{v / 1000:.2f}ms" if v >= 1000 else f"{v:.0f}us"

MEDIAN_KEYS = ("rps", "cpu_us_per_req", "upstream_cpu_us_per_req", "p50_us", "p99_us", "mean_us", "max_us")

def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

def report(results_path, meta_path, out_path):
    results = [json.loads(l) for l in open(results_path) if l.strip()]
    meta = json.load(open(meta_path))
    rounds = sorted({r.get("round", 1) for r in results})
    by = {}  # target -> its median figures over the rounds
    for target in dict.fromkeys(r["target"] for r in results):
        runs = [r for r in results if r["target"] == target]
        by[target] = {k: median([r.get(k) for r in runs]) for k in MEDIAN_KEYS}
    h2 = meta["proto"] == "h2"
    lat_cols = ("mean", "max") if h2 else ("p50", "p99")
    head = f"{'round':<5} {'target':<8} {'req/s':>10} {lat_cols[0]:>9} {lat_cols[1]:>9} {'cpu_us/req':>11} {'ups_us/req':>11} {'other_cpu':>9}  errors"
    lines = [head, "-" * len(head)]
    for r in results:
        errs = ", ".join(f"{k}={v}" for k, v in r["errors"].items()) or "0"
        if r["flagged"]:
            errs += "  <-- FLAGGED"
        cpu = "-" if r["cpu_us_per_req"] is None else f"{r['cpu_us_per_req']:.2f}"
        if r["target"] == "direct":
            cpu += "*"
        ups = "-" if r["upstream_cpu_us_per_req"] is None else f"{r['upstream_cpu_us_per_req']:.2f}"
        other = "-" if r["other_busy_cores"] is None else f"{r['other_busy_cores']:.2f}"
        rps = "-" if r["rps"] is None else f"{r['rps']:.0f}"
        lines.append(f"{r.get('round', 1):<5} {r['target']:<8} {rps:>10} {fmt_us(r.get(lat_cols[0] + '_us')):>9} "
                     f"{fmt_us(r.get(lat_cols[1] + '_us')):>9} {cpu:>11} {ups:>11} {other:>9}  {errs}")
    if "direct" in by:
        lines.append("* direct: cpu_us/req is the upstream nginx's own CPU per request (reference)")
    lines.append("other_cpu: cores busy with processes other than load generator/upstream/proxy during the run")
    ratios = {}
    w, n = by.get("weft"), by.get("nginx")
    if w and n:
        lines.append("")
        lines.append(f"medians over {len(rounds)} round(s):")
        for target in ("weft", "nginx"):
            m = by[target]
            lines.append(f"  {target:<6} req/s {m['rps'] or 0:.0f}  cpu_us/req {m['cpu_us_per_req'] or 0:.2f}  "
                         f"{lat_cols[0]} {fmt_us(m.get(lat_cols[0] + '_us'))}  {lat_cols[1]} {fmt_us(m.get(lat_cols[1] + '_us'))}")
        def ratio(key):
            # The ratio within each round (same machine state), then the median over rounds.
            per_round = []
            for rnd in rounds:
                a = next((r.get(key) for r in results if r["target"] == "weft" and r.get("round", 1) == rnd), None)
                b = next((r.get(key) for r in results if r["target"] == "nginx" and r.get("round", 1) == rnd), None)
                if a is not None and b:
                    per_round.append(a / b)
            return median(per_round)
        keys = [("cpu_us_per_req", "cpu/req"), ("rps", "req/s")]
        keys += [("mean_us", "mean latency"), ("max_us", "max latency")] if h2 else \
                [("p50_us", "p50 latency"), ("p99_us", "p99 latency")]
        lines.append("")
        lines.append("weft ÷ nginx (median of per-round ratios):")
        for key, label in keys:
            v = ratio(key)
            ratios[key] = v
            lines.append(f"  {label:<13} {('-' if v is None else f'{v:.2f}x')}")
    flagged = [r["target"] for r in results if r["flagged"]]
    busy = [r["target"] for r in results if (r["other_busy_cores"] or 0) > 0.2 or r["concurrent_processes"]]
    if flagged:
        lines.append(f"\nWARNING: runs with errors: {', '.join(flagged)}")
    if busy:
        lines.append(f"WARNING: other work was running during: {', '.join(busy)} "
                     f"(see other_cpu / concurrent_processes in the JSON); numbers are noisy")
    print("\n".join(lines))
    meta["results"] = results
    meta["medians"] = by
    meta["ratios_weft_over_nginx"] = ratios
    meta["flagged"] = flagged
    meta["noisy"] = busy
    with open(out_path, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")

def parse_loadgen(path):
    """weft-loadgen's `key value` lines (see tests/src/bin/loadgen.rs)."""
    kv = {}
    for line in open(path):
        parts = line.split(None, 1)
        if len(parts) == 2:
            kv[parts[0]] = parts[1].strip()

    def num(key):
        try:
            return float(kv[key])
        except (KeyError, ValueError):
            return None

    r = {"tool": "weft-loadgen"}
    r["offered_rps"] = num("rate")
    r["connections"] = int(num("connections") or 0)
    r["scheduled"] = int(num("scheduled") or 0)
    r["requests"] = int(num("completed") or 0)
    r["rps"] = num("achieved_rps")
    elapsed = num("elapsed_s")
    r["elapsed_us"] = elapsed * 1e6 if elapsed is not None else None
    # Latency from the scheduled send time (corrected for coordinated omission).
    for p in ("mean", "p50", "p90", "p99", "p999", "max"):
        r[f"{p}_us"] = num(f"latency_us_{p}")
    # From the actual write, and the generator's own lateness, to judge the figures above.
    for p in ("p50", "p99", "max"):
        r[f"service_{p}_us"] = num(f"service_us_{p}")
        r[f"send_lag_{p}_us"] = num(f"send_lag_us_{p}")
    errors = {k: int(v) for k, v in kv.items() if k.startswith("errors_") and v.isdigit() and int(v)}
    for key in ("non_2xx", "unsent"):
        if int(num(key) or 0):
            errors[key] = int(num(key))
    if "completed" not in kv:
        errors["unparsable_output"] = 1
    r["errors"] = errors
    print(json.dumps(r))

def tag(*pairs):
    """Adds KEY=VALUE fields (integers when they look like one) to the JSON line on stdin."""
    r = json.load(sys.stdin)
    for pair in pairs:
        key, value = pair.split("=", 1)
        r[key] = int(value) if value.isdigit() else value
    print(json.dumps(r))

def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"

def report_filters(results_path, meta_path, out_path):
    """SCENARIO=filters: weft with 0, 1, 5 pass-through filters and nginx, per load mode."""
    results = [json.loads(l) for l in open(results_path) if l.strip()]
    meta = json.load(open(meta_path))
    targets = meta["targets"]                  # in run order, e.g. weft-0 weft-1 weft-5 nginx
    counts = meta["filter_counts"]             # target -> pass-through filters (weft only)
    idle = meta.get("idle_cpu_cores", {})      # target -> cores used with no load
    loads = list(dict.fromkeys(r["load"] for r in results))
    rounds = sorted({r["round"] for r in results})
    keys = MEDIAN_KEYS + ("user_us_per_req", "sys_us_per_req", "service_p99_us", "send_lag_p99_us")
    lines = []

    def run(load, target, rnd):
        return next((r for r in results if r["load"] == load and r["target"] == target
                     and r["round"] == rnd), None)

    def per_round(fn):
        """fn(round) for every round where it is defined: the median, min and max."""
        values = [v for v in (fn(rnd) for rnd in rounds) if v is not None]
        return (median(values), min(values), max(values)) if values else (None, None, None)

    def value(load, target, rnd, key):
        r = run(load, target, rnd)
        return None if r is None or r["flagged"] else r.get(key)

    head = (f"{'round':<5} {'load':<6} {'target':<12} {'req/s':>8} {'p50':>9} {'p99':>9} "
            f"{'cpu_us/req':>10} {'user':>7} {'sys':>7} {'ups_us/req':>10} {'other_cpu':>9}  errors")
    lines += [head, "-" * len(head)]
    for r in results:
        errs = ", ".join(f"{k}={v}" for k, v in r["errors"].items()) or "0"
        if r["flagged"]:
            errs += "  <-- FLAGGED"
        lines.append(f"{r['round']:<5} {r['load']:<6} {r['target']:<12} {fmt(r['rps'], 0):>8} "
                     f"{fmt_us(r.get('p50_us')):>9} {fmt_us(r.get('p99_us')):>9} "
                     f"{fmt(r['cpu_us_per_req']):>10} {fmt(r.get('user_us_per_req')):>7} "
                     f"{fmt(r.get('sys_us_per_req')):>7} {fmt(r['upstream_cpu_us_per_req']):>10} "
                     f"{fmt(r['other_busy_cores']):>9}  {errs}")
    lines.append("user, sys: cpu_us/req split into user space and the kernel")
    lines.append("other_cpu: cores busy with processes other than load generator/upstream/proxy")

    medians, added, ratios = {}, {}, {}
    baseline = next((t for t in targets if counts.get(t) == 0), None)
    for load in loads:
        what = (f"open loop, {meta['rate']} req/s over {meta['conns']} connections, latency from "
                f"the scheduled send" if load == "open" else
                f"closed loop, wrk -c{meta['conns']}, as fast as it goes")
        lines += ["", f"== {load}: {what}; medians over {len(rounds)} round(s) =="]
        lines.append(f"  {'target':<12} {'filters':>7} {'cpu_us/req':>10} {'user':>7} {'sys':>7} "
                     f"{'p50':>9} {'p99':>9} {'req/s':>8} {'idle_cpu':>8}")
        medians[load] = {}
        for t in targets:
            runs = [r for r in results if r["load"] == load and r["target"] == t and not r["flagged"]]
            m = {k: median([r.get(k) for r in runs]) for k in keys}
            medians[load][t] = m
            n = counts.get(t)
            lines.append(f"  {t:<12} {'-' if n is None else n:>7} {fmt(m['cpu_us_per_req']):>10} "
                         f"{fmt(m['user_us_per_req']):>7} {fmt(m['sys_us_per_req']):>7} "
                         f"{fmt_us(m['p50_us']):>9} {fmt_us(m['p99_us']):>9} {fmt(m['rps'], 0):>8} "
                         f"{fmt(idle.get(t), 3):>8}")
        lines.append("  idle_cpu: cores the target used over a few seconds with no load at all")
        if load == "open":
            lags = [r.get("send_lag_p99_us") for r in results if r["load"] == "open"]
            lag = median(lags)
            lines.append(f"  load generator send lag p99 (median over runs): {fmt_us(lag)}; "
                         f"latencies include it")

        # What each pass-through filter adds: per round, then the median (and range) over rounds.
        added[load] = {}
        if baseline is not None:
            lines.append(f"  added per pass-through filter, vs {baseline} (empty chain); "
                         f"median [min..max] over rounds:")
            target_us = meta["target_cpu_us_per_filter"]
            for t in targets:
                n = counts.get(t)
                if not n:
                    continue
                # The builtins chain is judged as a whole against its own budget.
                whole = n == "builtins"
                div = 1 if whole else n
                budget = meta.get("target_cpu_us_builtins", 15) if whole else target_us
                row = {}
                for key in ("cpu_us_per_req", "user_us_per_req", "sys_us_per_req", "p50_us", "p99_us"):
                    def delta(rnd, key=key, t=t, div=div):
                        a, b = value(load, t, rnd, key), value(load, baseline, rnd, key)
                        return None if a is None or b is None else (a - b) / div
                    row[key] = per_round(delta)
                added[load][t] = {k: v[0] for k, v in row.items()}
                cpu, lo, hi = row["cpu_us_per_req"]
                verdict = ("-" if cpu is None else
                           "PASS" if cpu <= budget else "FAIL")
                formula = (f"{t} - {baseline} (whole chain)" if whole else
                           f"({t} - {baseline}) / {n}" if n > 1 else f"{t} - {baseline}")
                p50, p99 = row["p50_us"][0], row["p99_us"][0]
                user, sys_ = row["user_us_per_req"][0], row["sys_us_per_req"][0]
                lines.append(f"    {formula:<24} cpu {fmt(cpu)} us/req [{fmt(lo)}..{fmt(hi)}]  "
                             f"{verdict} (target <= {budget} us)   user {fmt(user)}  sys {fmt(sys_)}  "
                             f"p50 {fmt(p50, 1)} us  p99 {fmt(p99, 1)} us")

        # weft ÷ nginx, within each round, then the median.
        ratios[load] = {}
        if "nginx" in targets:
            lines.append("  weft / nginx (median of per-round ratios):")
            ratio_keys = [("cpu_us_per_req", "cpu/req"), ("p50_us", "p50"), ("p99_us", "p99")]
            if load == "closed":
                ratio_keys.append(("rps", "req/s"))
            for t in targets:
                if t == "nginx":
                    continue
                row = {}
                for key, _ in ratio_keys:
                    def ratio(rnd, key=key, t=t):
                        a, b = value(load, t, rnd, key), value(load, "nginx", rnd, key)
                        return a / b if a is not None and b else None
                    row[key] = per_round(ratio)[0]
                ratios[load][t] = row
                lines.append(f"    {t:<12} " + "  ".join(
                    f"{label} {('-' if row[key] is None else f'{row[key]:.2f}x')}"
                    for key, label in ratio_keys))

    flagged = [f"{r['load']}/{r['target']}/round {r['round']}" for r in results if r["flagged"]]
    busy = [f"{r['load']}/{r['target']}/round {r['round']}" for r in results
            if (r["other_busy_cores"] or 0) > 0.2 or r["concurrent_processes"]]
    if flagged:
        lines.append(f"\nWARNING: runs with errors (left out of medians, differences and ratios): "
                     f"{', '.join(flagged)}")
    if busy:
        lines.append(f"WARNING: other work was running during: {', '.join(busy)} "
                     f"(see other_cpu / concurrent_processes in the JSON); numbers are noisy")
    print("\n".join(lines))
    meta.update(results=results, medians=medians, added_per_filter=added,
                ratios_weft_over_nginx=ratios, flagged=flagged, noisy=busy)
    with open(out_path, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")

def split_lines(results, lines):
    """SPLIT=1: each target's instructions per request by category (load minus idle run), and
    what the filters add in each category over the empty chain."""
    for r in results:
        load, idle = r["load"].get("split"), r["idle"].get("split")
        requests = r["requests"]
        r["split_per_request"] = ({k: (load[k] - idle[k]) / requests for k in SPLIT_CATEGORIES}
                                  if load and idle and requests > 0 else None)
    # nginx has no debug information to split by (and no guest).
    rows = [r for r in results if r["split_per_request"] and r["target"] != "nginx"]
    if not rows:
        return
    cols = "".join(f"{k:>11}" for k in SPLIT_CATEGORIES)
    lines.append(f"where the instructions go, per request (SPLIT=1; guest = the plugins' own "
                 f"JIT-compiled code):")
    lines.append(f"  {'':<28}{cols}")
    for r in rows:
        lines.append(f"  {r['target']:<28}" + "".join(
            f"{r['split_per_request'][k]:>11.0f}" for k in SPLIT_CATEGORIES))
    base = next((r for r in rows if r["filters"] == 0 and not r["flagged"]), None)
    if base is None:
        return
    lines.append(f"  added over {base['target']}:")
    shortest = min((r for r in rows if r["filters"] and not r["flagged"]),
                   key=lambda r: r["filters"], default=None)
    for r in rows:
        if r["flagged"] or r is base:
            continue
        n = r["filters"] or 1  # the builtins chain counts as a whole
        label = f"({r['target']} - {base['target']}) / {n}" if n > 1 else f"{r['target']} - {base['target']}"
        r["split_added"] = {k: (r["split_per_request"][k] - base["split_per_request"][k]) / n
                            for k in SPLIT_CATEGORIES}
        lines.append(f"  {label:<28}" + "".join(
            f"{r['split_added'][k]:>11.0f}" for k in SPLIT_CATEGORIES))
        if shortest is not None and r["filters"] and r["filters"] > shortest["filters"]:
            m = r["filters"] - shortest["filters"]
            label = f"({r['target']} - {shortest['target']}) / {m}"
            lines.append(f"  {label:<28}" + "".join(
                f"{(r['split_per_request'][k] - shortest['split_per_request'][k]) / m:>11.0f}"
                for k in SPLIT_CATEGORIES))

def report_instructions(results_path, meta_path, out_path):
    """bench/instructions.sh: instructions per request under callgrind, load run minus idle run."""
    results = [json.loads(l) for l in open(results_path) if l.strip()]
    meta = json.load(open(meta_path))
    for r in results:
        requests = r["load"]["requests"] - r["idle"]["requests"]
        instructions = r["load"]["instructions"] - r["idle"]["instructions"]
        served = r["wrk"].get("requests") or 0
        r["requests"] = requests
        r["instructions_per_request"] = instructions / requests if requests > 0 else None
        # Calls into plugin instances per request of the measured wrk run (counted after warm-up).
        r["plugin_calls_per_request"] = (r["load"]["plugin_calls"] / served
                                         if served and r["filters"] is not None else None)
        problems = dict(r["wrk"]["errors"])
        if r["plugin_failures"]:
            problems["plugin_failures"] = r["plugin_failures"]
        if r["log_warnings_or_errors"]:
            problems["log_warnings_or_errors"] = r["log_warnings_or_errors"]
        if requests <= 0:
            problems["no_requests"] = 1
        r["problems"] = problems
        r["flagged"] = bool(problems)
    by = {r["target"]: r for r in results}
    nginx = by.get("nginx", {}).get("instructions_per_request")

    def ratio(v):
        return None if v is None or not nginx else v / nginx

    lines = []
    if meta["filters"] is None:
        # The default mode: weft without filters next to nginx.
        weft = by["weft"]["instructions_per_request"]
        lines.append(f"user-space instructions per request (callgrind, wrk -c{meta['conns']} for "
                     f"{meta['duration_s']}s, one worker each):")
        lines.append(f"  weft   {fmt(weft, 0)}")
        lines.append(f"  nginx  {fmt(nginx, 0)}")
        lines.append(f"  weft / nginx  {fmt(ratio(weft))}x")
    else:
        lines.append(f"user-space instructions per request (callgrind; wrk -t1 -c{meta['conns']} for "
                     f"{meta['duration_s']}s after a {meta['warmup_s']}s warm-up; one worker each; "
                     f"minus an idle run of the same length):")
        head = (f"  {'target':<10} {'filters':<16} {'instr/req':>10} {'/ nginx':>8}  "
                f"{'plugin calls/req':>16}  {'requests':>8}")
        lines += [head, "  " + "-" * (len(head) - 2)]
        for r in results:
            n = r["filters"]
            label = "-" if n is None else "0 (empty chain)" if n == 0 else str(n)
            if r["target"] == "weft-none":
                label = "none (no chain)"
            flag = "  <-- FLAGGED: " + ", ".join(f"{k}={v}" for k, v in r["problems"].items()) \
                if r["flagged"] else ""
            lines.append(f"  {r['target']:<10} {label:<16} {fmt(r['instructions_per_request'], 0):>10} "
                         f"{fmt(ratio(r['instructions_per_request'])) + 'x':>8}  "
                         f"{fmt(r['plugin_calls_per_request']):>16}  {r['wrk'].get('requests', 0):>8}"
                         f"{flag}")
        base = next((r for r in results if r["filters"] == 0 and not r["flagged"]), None)
        added = {}
        if base is not None:
            lines.append(f"instructions added per pass-through filter (vs {base['target']}, the "
                         f"empty chain; nginx's per-request total: {fmt(nginx, 0)}):")
            for r in results:
                n = r["filters"]
                if not n or r["flagged"] or r["instructions_per_request"] is None:
                    continue
                per = (r["instructions_per_request"] - base["instructions_per_request"]) / n
                added[r["target"]] = {"filters": n, "instructions_per_filter": per,
                                      "per_filter_over_nginx": ratio(per)}
                formula = f"({r['target']} - {base['target']}) / {n}" if n > 1 \
                    else f"{r['target']} - {base['target']}"
                lines.append(f"  {formula:<24} {fmt(per, 0):>8} instr/req per filter  "
                             f"= {fmt(ratio(per), 3)}x nginx's per-request total")
            # Between the shortest and the longest non-empty chain: the cost of one more filter,
            # without what any non-empty chain pays once per request.
            chains = sorted((r for r in results if r["filters"] and not r["flagged"]
                             and r["instructions_per_request"] is not None),
                            key=lambda r: r["filters"])
            if len(chains) >= 2 and chains[0]["filters"] < chains[-1]["filters"]:
                a, b = chains[0], chains[-1]
                per = ((b["instructions_per_request"] - a["instructions_per_request"])
                       / (b["filters"] - a["filters"]))
                formula = f"({b['target']} - {a['target']}) / {b['filters'] - a['filters']}"
                added[f"{b['target']}-{a['target']}"] = {
                    "instructions_per_filter": per, "per_filter_over_nginx": ratio(per)}
                lines.append(f"  {formula:<24} {fmt(per, 0):>8} instr/req per filter  "
                             f"= {fmt(ratio(per), 3)}x nginx's per-request total (one more filter "
                             f"in a non-empty chain)")
        meta["added_per_filter"] = added
    split_lines(results, lines)
    flagged = [r["target"] for r in results if r["flagged"]]
    if flagged:
        lines.append(f"WARNING: runs with errors: {', '.join(flagged)} (see the JSON)")
    print("\n".join(lines))
    meta.update(results=results, nginx_instructions_per_request=nginx, flagged=flagged)
    with open(out_path, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"results: {out_path}")


def cost_line_address(position, addr):
    """The instruction address of a callgrind cost line (`--dump-instr=yes`): its first
    position, absolute (`0x...`) or relative to the previous line's (`+N`, `-N`, `*`)."""
    if position.startswith("0x"):
        return int(position, 16)
    if position[0] == "+":
        return addr + int(position[1:])
    if position[0] == "-":
        return addr - int(position[1:])
    return addr

# Where the instructions of a callgrind profile go (bench/instructions.sh with SPLIT=1):
# - guest: the plugins' own code, JIT-compiled (named by wasmtime's perf map);
# - wasmtime: its trampolines (JIT) and its runtime's code, wherever inlined (by source file);
# - weft: code from this repository's sources, wherever inlined;
# - libraries: other crates (tokio, hyper, http, bytes, hashbrown, prometheus...);
# - libc+alloc: libc (memcpy, ...) and the allocator (mimalloc).
# Code of Rust's standard library counts for the crate of the function it was inlined into.
SPLIT_CATEGORIES = ("guest", "wasmtime", "weft", "libraries", "libc+alloc")
WASMTIME_SOURCE = re.compile(r"/(wasmtime|cranelift|pulley|wasmtime-internal)[-_][^/]*/")

def callgrind_split(path, perfmap_path, repo_dir):
    """Instructions per category (SPLIT_CATEGORIES) of a `callgrind --dump-instr=yes` profile,
    exclusive: the inclusive cost lines of calls are skipped."""
    jit = []
    if perfmap_path and os.path.exists(perfmap_path):
        for line in open(perfmap_path):
            parts = line.rstrip("\n").split(" ", 2)
            if len(parts) == 3:
                jit.append((int(parts[0], 16), int(parts[1], 16), parts[2]))
    jit.sort()
    jit_starts = [start for start, _, _ in jit]
    repo = repo_dir.rstrip("/") + "/"

    def crate(fn):
        m = re.match(r"[<&*]*(?:(?:dyn|mut|const) )*([A-Za-z_][A-Za-z0-9_]*)::", fn or "")
        return m.group(1) if m else ""

    def by_crate(fn):
        c = crate(fn)
        if not c:
            return "libc+alloc"
        if c.startswith("weft"):
            return "weft"
        if c.startswith(("wasmtime", "cranelift")):
            return "wasmtime"
        return "libraries"

    def by_source(fn, source):
        if source is None or source == "???":
            return None  # JIT code, or a binary without debug info: decided per address
        if WASMTIME_SOURCE.search(source):
            return "wasmtime"
        if source.startswith(repo):
            return "weft"
        if source.startswith("/rustc/") or "/rustlib/" in source:
            return by_crate(fn)
        if "mimalloc" in source:
            return "libc+alloc"
        if "/.cargo/registry/" in source or "/rust/deps/" in source:
            return "libraries"
        return "libc+alloc"

    def by_address(fn, addr):
        i = bisect.bisect_right(jit_starts, addr) - 1
        if i >= 0 and addr < jit[i][0] + jit[i][1]:
            return "wasmtime" if "trampoline" in jit[i][2] else "guest"
        return by_crate(fn)

    names = {}

    def name(kind, value):
        m = re.match(r"\((\d+)\)(?: (.*))?", value)
        if not m:
            return value
        if m.group(2):
            names[(kind, m.group(1))] = m.group(2)
        return names.get((kind, m.group(1)), "?")

    totals = dict.fromkeys(SPLIT_CATEGORIES, 0)
    known = {}
    fn = file = source = None
    addr, in_call = 0, False
    for line in open(path):
        head = line[:1]
        if head in "0123456789+-*":
            parts = line.split()
            addr = cost_line_address(parts[0], addr)
            if in_call:
                in_call = False
                continue
            if len(parts) < 3:
                continue
            key = (fn, source)
            if key not in known:
                known[key] = by_source(fn, source)
            category = known[key] or by_address(fn, addr)
            totals[category] += int(parts[-1])
        elif line.startswith("fn="):
            fn, source = name("fn", line[3:].strip()), file
        elif line.startswith("fl="):
            file = source = name("fl", line[3:].strip())
        elif line.startswith(("fi=", "fe=")):
            source = name("fl", line[3:].strip())
        elif line.startswith("cfn="):
            name("fn", line[4:].strip())
        elif line.startswith(("cfi=", "cfl=")):
            name("fl", line[4:].strip())
        elif line.startswith("calls="):
            in_call = True
    return totals

def callgrind_instructions(path):
    """Ir per (function, instruction address) of a `callgrind --dump-instr=yes` profile,
    exclusive: the inclusive cost lines of calls are skipped."""
    names, costs = {}, {}
    fn, addr, in_call = None, 0, False

    def name(value):
        m = re.match(r"\((\d+)\)(?: (.*))?", value)
        if not m:
            return value
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), "?")

    for line in open(path):
        if line.startswith("fn="):
            fn = name(line[3:].strip())
        elif line.startswith("cfn="):
            name(line[4:].strip())
        elif line.startswith("calls="):
            in_call = True
        elif line[:1] in "0123456789+-*":
            parts = line.split()
            addr = cost_line_address(parts[0], addr)
            if in_call:
                in_call = False
                continue
            if len(parts) >= 3:
                key = (fn, addr)
                costs[key] = costs.get(key, 0) + int(parts[-1])
    return costs


def footprint(hot_share, out_path, *profiles):
    """bench/footprint.sh: hot 64-byte code lines per request, and where each config's extra
    lines over the first one come from."""
    hot_share = float(hot_share)
    runs = []
    for name, path, requests in zip(profiles[0::3], profiles[1::3], profiles[2::3]):
        requests = int(requests)
        costs = callgrind_instructions(path)
        by_fn = {}
        for (fn, addr), ir in costs.items():
            if ir >= hot_share * requests:
                # Recursion levels ('2) and JIT-compiled guest code (no symbol) fold together.
                key = re.sub(r"'\d+$", "", fn or "?")
                key = "(guest code, JIT)" if key.startswith("0x") or key == "?" else key
                by_fn.setdefault(key, set()).add(addr >> 6)
        lines = set().union(*by_fn.values()) if by_fn else set()
        runs.append({"target": name, "requests": requests,
                     "instructions_per_request": sum(costs.values()) / requests,
                     "hot_lines": len(lines), "hot_kib": len(lines) * 64 / 1024,
                     "by_fn": by_fn, "lines": lines})
    base = runs[0]
    out = []
    print(f"{'target':<14} {'hot lines':>9} {'hot KiB':>8} {'instr/req':>10}")
    for r in runs:
        print(f"{r['target']:<14} {r['hot_lines']:>9} {r['hot_kib']:>8.1f} "
              f"{r['instructions_per_request']:>10.0f}")
    for r in runs[1:]:
        seen, extra = set(base["lines"]), {}
        for fn, lines in r["by_fn"].items():
            new = lines - seen
            seen |= new
            if new:
                extra[fn] = len(new)
        top = sorted(extra.items(), key=lambda kv: -kv[1])
        print(f"\n{r['target']} over {base['target']}: {sum(extra.values())} more hot lines; "
              f"the largest contributors:")
        for fn, n in top[:15]:
            print(f"  {n:>5}  {fn[:110]}")
        r["extra_over_first"] = dict(top)
    for r in runs:
        out.append({k: v for k, v in r.items() if k not in ("by_fn", "lines")})
    with open(out_path, "w") as f:
        json.dump({"scenario": "footprint", "hot_share": hot_share, "results": out}, f, indent=2)
        f.write("\n")
    print(f"results: {out_path}")

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"ports": lambda: ports(int(args[0])), "wrk": lambda: parse_wrk(*args),
     "h2load": lambda: parse_h2load(*args), "loadgen": lambda: parse_loadgen(*args),
     "record": lambda: record(*args), "tag": lambda: tag(*args),
     "report": lambda: report(*args), "report_filters": lambda: report_filters(*args),
     "report_instructions": lambda: report_instructions(*args),
     "footprint": lambda: footprint(*args),
     "split": lambda: print(json.dumps(callgrind_split(*args)))}[cmd]()
