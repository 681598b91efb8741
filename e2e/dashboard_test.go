//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const dashboardFile = "../helm-values/grafana-dashboard.json"

// Series names in PromQL: the sidecar's own, and the Go and process collectors' it registers.
var (
	dashboardMetricRE = regexp.MustCompile(`\b(?:nats_callout|process|go)_[a-z0-9_]+\b`)
	// metric{matchers}: the label names the matchers use.
	selectorRE = regexp.MustCompile(`\b((?:nats_callout|process|go)_[a-z0-9_]+)\{([^}]*)\}`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	// by (a, b) and on (a): the label names an aggregation or a match keeps.
	groupingRE = regexp.MustCompile(`\b(?:by|on)\s*\(([^)]*)\)`)
	variableRE = regexp.MustCompile(`\$\{?(\w+)\}?`)
)

// Labels Prometheus adds to every scraped series (the target's): the dashboard may use them
// although the sidecar does not export them.
var targetLabels = []string{"pod", "instance", "job", "namespace"}

type dashboardPanel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		Expr       string          `json:"expr"`
		RefID      string          `json:"refId"`
		Datasource json.RawMessage `json:"datasource"`
	} `json:"targets"`
}

// helm-values/grafana-dashboard.json: a Grafana dashboard whose every query names series and
// labels a running sidecar (that has made decisions) really exports, and that shows every
// nats_callout_* series the sidecar has.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID           string           `json:"uid"`
		Title         string           `json:"title"`
		SchemaVersion int              `json:"schemaVersion"`
		Panels        []dashboardPanel `json:"panels"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || dash.Title == "" || dash.SchemaVersion < 36 {
		t.Errorf("uid %q title %q schemaVersion %d: want a uid, a title and schemaVersion 36 or later", dash.UID, dash.Title, dash.SchemaVersion)
	}

	// Queries: the panels' and the template variables'.
	type query struct{ where, expr string }
	var queries []query
	variables := map[string]bool{"__rate_interval": true, "__interval": true}
	for _, v := range dash.Templating.List {
		variables[v.Name] = true
		switch {
		case v.Name == "datasource":
			if v.Type != "datasource" || v.Query != "prometheus" {
				t.Errorf("variable datasource is %s %v, want a Prometheus data source choice", v.Type, v.Query)
			}
		case v.Type == "query":
			q, _ := json.Marshal(v.Query)
			var m struct{ Query string }
			if json.Unmarshal(q, &m) != nil || m.Query == "" {
				t.Errorf("variable %s has no query", v.Name)
			}
			queries = append(queries, query{"variable " + v.Name, m.Query})
		}
	}
	if !variables["datasource"] || !variables["pod"] {
		t.Errorf("variables %v, want datasource and pod", variables)
	}
	ids := map[int]bool{}
	const ds = `"uid":"${datasource}"`
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d is used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W < 1 || p.GridPos.H < 1 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24 columns", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || len(p.Targets) == 0 || !strings.Contains(compact(p.Datasource), ds) {
			t.Errorf("panel %d %q: want a title, queries and the ${datasource} data source", p.ID, p.Title)
		}
		for _, q := range p.Targets {
			if q.Expr == "" || q.RefID == "" || !strings.Contains(compact(q.Datasource), ds) {
				t.Errorf("panel %q: query %+v needs expr, refId and the ${datasource} data source", p.Title, q)
			}
			queries = append(queries, query{"panel " + p.Title, q.Expr})
		}
	}
	if len(queries) < 10 {
		t.Fatalf("%d queries, want the set the dashboard documents", len(queries))
	}

	exported := sidecarSeries(t, "dashboard")
	shown := map[string]bool{}
	for _, q := range queries {
		if strings.Count(q.expr, "(") != strings.Count(q.expr, ")") || strings.Count(q.expr, "{") != strings.Count(q.expr, "}") {
			t.Errorf("%s: unbalanced brackets in %s", q.where, q.expr)
		}
		for _, m := range variableRE.FindAllStringSubmatch(q.expr, -1) {
			if !variables[m[1]] {
				t.Errorf("%s: $%s is not a variable of the dashboard", q.where, m[1])
			}
		}
		names := dashboardMetricRE.FindAllString(q.expr, -1)
		if len(names) == 0 {
			t.Errorf("%s uses none of the sidecar's series: %s", q.where, q.expr)
		}
		labels := map[string]bool{}
		for _, n := range names {
			shown[n] = true
			if exported[n] == nil {
				t.Errorf("%s uses %s, which the sidecar does not export", q.where, n)
			}
			for l := range exported[n] {
				labels[l] = true
			}
		}
		for _, sel := range selectorRE.FindAllStringSubmatch(q.expr, -1) {
			for _, m := range matcherRE.FindAllStringSubmatch(sel[2], -1) {
				if exported[sel[1]] != nil && !exported[sel[1]][m[1]] && !slices.Contains(targetLabels, m[1]) {
					t.Errorf("%s: %s has no label %s", q.where, sel[1], m[1])
				}
			}
		}
		for _, g := range groupingRE.FindAllStringSubmatch(q.expr, -1) {
			for _, l := range strings.Split(g[1], ",") {
				if l = strings.TrimSpace(l); l != "" && !labels[l] && !slices.Contains(targetLabels, l) {
					t.Errorf("%s: groups by %s, which none of its series has", q.where, l)
				}
			}
		}
	}
	for name := range exported {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if strings.HasPrefix(name, "nats_callout_") && !shown[name] && !shown[base] && !shown[base+"_bucket"] {
			t.Errorf("the sidecar exports %s, which the dashboard does not show", name)
		}
	}
}

// compact is a JSON value without spaces, for comparing small objects.
func compact(raw json.RawMessage) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}
