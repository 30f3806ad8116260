#!/usr/bin/env python3
"""Print every PromQL expr of a Grafana dashboard, one per line.

usage: dashboard-exprs.py [-t] [-s] [DASHBOARD.json]

The default dashboard is grafana/dashboards/merch-store.json beside this
script. Panels inside rows (collapsed rows keep theirs in "panels") are
included, in dashboard order. With -t each line is "panel title<TAB>expr".
Whitespace inside an expr is collapsed so each fits on one line.
With -s the dashboard's variables are replaced as Grafana would for the
compose stack, so a line can be pasted into Prometheus: $__rate_interval by
1m, $job by merch-store, $instance by .* (any).
"""
import json
import os
import sys


SUBSTITUTES = [("$__rate_interval", "1m"), ("$job", "merch-store"), ("$instance", ".*")]


def walk(panels):
    for p in panels or []:
        yield p
        yield from walk(p.get("panels"))


def main(argv):
    titles, substitute = "-t" in argv, "-s" in argv
    args = [a for a in argv if a not in ("-t", "-s")]
    if len(args) > 1:
        sys.exit(__doc__.strip().splitlines()[2])
    path = args[0] if args else os.path.join(
        os.path.dirname(os.path.abspath(__file__)),
        "grafana", "dashboards", "merch-store.json")
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    # A dashboard exported "for sharing" or via the API may be wrapped.
    dash = dash.get("dashboard", dash)
    for panel in walk(dash.get("panels")):
        for target in panel.get("targets") or []:
            expr = " ".join(str(target.get("expr") or "").split())
            if substitute:
                for var, value in SUBSTITUTES:
                    expr = expr.replace(var, value)
            if expr:
                print(f"{panel.get('title', '')}\t{expr}" if titles else expr)


if __name__ == "__main__":
    main(sys.argv[1:])
