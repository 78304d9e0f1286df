// driftwatch as a monitoring mixin: its Grafana dashboards, its alerts and
// its recording rules, for jsonnet-based monitoring setups
// (kube-prometheus, grafana-agent, mimir). Built from the same files the
// Kustomize base ships, so the two never disagree:
//
//   jsonnet -J . -e '(import "mixin/mixin.libsonnet").prometheusAlerts'
//
// Drifts themselves reach Alertmanager through driftwatch's own sink; the
// alerts here cover driftwatch's health.
local rule = std.parseYaml(importstr '../deploy/prometheusrule.yaml');

local only(kind) = {
  groups: [
    group { rules: [r for r in group.rules if std.objectHas(r, kind)] }
    for group in rule.spec.groups
    if std.length([r for r in group.rules if std.objectHas(r, kind)]) > 0
  ],
};

{
  grafanaDashboards+:: {
    'driftwatch-fleet-overview.json': import '../dashboards/fleet-overview.json',
    'driftwatch-service.json': import '../dashboards/service.json',
  },
  prometheusAlerts+:: only('alert'),
  prometheusRules+:: only('record'),
}
