//go:build e2e

package e2e

// Checks of helm-values/ that can run without the NATS chart (which cannot be downloaded here):
// the values apply to a pod template shaped like the chart's StatefulSet the way the chart
// applies them (podTemplate.merge, then the podTemplate.patch JSON Patch), the `$tplYaml`
// templates render, the files from `init` fill every placeholder, and the resulting manifests
// pass `kubectl apply --dry-run=server` against the real API server. The RBAC is applied for
// real and probed with `kubectl auth can-i` as the chart's ServiceAccount.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	natsjwt "github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/installer"
)

const (
	calloutValuesFile    = "../helm-values/callout-values.yaml"
	namespacedValuesFile = "../helm-values/callout-values-namespaced.yaml"
	podMonitorFile       = "../helm-values/podmonitor.yaml"
	installGuide         = "../docs/install.md"
	chartStatefulSet     = "../testdata/nats-statefulset.yaml"
	sidecarName          = "nats-callout"
	sidecarPort          = "callout-http"
	watchNSAnnotation    = "nats-k8s-oidc-callout/watch-namespaces"
)

// readYAML parses a YAML file into generic maps and lists (JSON types).
func readYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseYAML(t, path, data)
}

func parseYAML(t *testing.T, what string, data []byte) map[string]any {
	t.Helper()
	var v map[string]any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// mergeValues merges -f value files the way Helm does: maps key by key, later files winning;
// anything else (lists included) replaced.
func mergeValues(files ...map[string]any) map[string]any {
	out := map[string]any{}
	for _, f := range files {
		out = mergeMaps(out, f)
	}
	return out
}

func mergeMaps(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = mergeMaps(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// mergeOverwrite is the chart's podTemplate.merge: Sprig's mergeOverwrite, where maps merge
// recursively and a nil in the merged value does not erase anything.
func mergeOverwrite(dst, src map[string]any) map[string]any {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				dst[k] = mergeOverwrite(dm, sm)
				continue
			}
		}
		if v != nil {
			dst[k] = v
		}
	}
	return dst
}

// get walks a path of map keys.
func get(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// chart is what the helm-values templates read from the chart's template context.
type chart struct {
	release, namespace string
	// serviceAccount is .Values.serviceAccount.name; the chart defaults it to the full name.
	serviceAccount string
	// values are the merged values (before templating) that templates read as .Values, as the
	// chart's templating of values does (e.g. .Values.calloutImage).
	values map[string]any
}

// fullname is the chart's nats.fullname for a release without name overrides.
func (c chart) fullname() string {
	if strings.Contains(c.release, "nats") {
		return c.release
	}
	return c.release + "-nats"
}

// render evaluates every `$tplYaml` in v as the chart does (a Go template with the chart's
// helpers, the result parsed as YAML). The templates use only include, quote, fail, with, if,
// .Values.serviceAccount.name and the other values in c.values; anything else is an error
// (a missing value too), so that a template the chart could not render does not pass here.
func (c chart) render(v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		if _, ok := v["$tplYamlSpread"]; ok {
			return nil, errors.New("$tplYamlSpread is not supported by this check")
		}
		if src, ok := v["$tplYaml"]; ok {
			if len(v) != 1 {
				return nil, fmt.Errorf("a $tplYaml map must have no other keys: %v", v)
			}
			s, ok := src.(string)
			if !ok {
				return nil, fmt.Errorf("$tplYaml is not a string: %v", src)
			}
			return c.tplYaml(s)
		}
		out := make(map[string]any, len(v))
		for k, e := range v {
			r, err := c.render(e)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			r, err := c.render(e)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = r
		}
		return out, nil
	default:
		return v, nil
	}
}

// renderValues renders all of values with values as the templates' .Values, as the chart does.
func (c chart) renderValues(values map[string]any) (any, error) {
	c.values = values
	return c.render(values)
}

func (c chart) tplYaml(src string) (any, error) {
	sa := c.serviceAccount
	if sa == "" {
		sa = c.fullname()
	}
	funcs := template.FuncMap{
		"include": func(name string, _ any) (string, error) {
			switch name {
			case "nats.fullname":
				return c.fullname(), nil
			case "nats.namespace":
				return c.namespace, nil
			case "nats.labels":
				return fmt.Sprintf("helm.sh/chart: nats-1.x\napp.kubernetes.io/name: nats\napp.kubernetes.io/instance: %s\n"+
					"app.kubernetes.io/component: nats\napp.kubernetes.io/managed-by: Helm", c.release), nil
			}
			return "", fmt.Errorf("include %q is not a helper this check knows", name)
		},
		"quote": func(s string) string { return fmt.Sprintf("%q", s) },
		"fail":  func(msg string) (string, error) { return "", errors.New(msg) },
	}
	tpl, err := template.New("tplYaml").Option("missingkey=error").Funcs(funcs).Parse(src)
	if err != nil {
		return nil, err
	}
	values := maps.Clone(c.values)
	if values == nil {
		values = map[string]any{}
	}
	values["serviceAccount"] = mergeMaps(mapOrEmpty(values["serviceAccount"]), map[string]any{"name": sa})
	ctx := map[string]any{
		"Values":  values,
		"Release": map[string]any{"Name": c.release, "Namespace": c.namespace},
	}
	var b bytes.Buffer
	if err := tpl.Execute(&b, ctx); err != nil {
		return nil, err
	}
	var out any
	if err := yaml.Unmarshal(b.Bytes(), &out); err != nil {
		return nil, fmt.Errorf("%q does not parse as YAML: %w", b.String(), err)
	}
	return out, nil
}

func mapOrEmpty(v any) map[string]any {
	if m, ok := v.(map[string]any); ok {
		return m
	}
	return map[string]any{}
}

// podTemplate applies podTemplate.merge and podTemplate.patch of values to the chart's
// StatefulSet, in the chart's order, and returns the StatefulSet as generic maps. The chart
// templates the values first (the sidecar's image comes from .Values.calloutImage); values
// already rendered are left as they are.
func podTemplate(t *testing.T, values map[string]any) map[string]any {
	t.Helper()
	rendered, err := chart{release: "nats", namespace: "nats", values: values}.render(values["podTemplate"])
	if err != nil {
		t.Fatalf("podTemplate does not render: %v", err)
	}
	values = maps.Clone(values)
	values["podTemplate"] = rendered
	sts := readYAML(t, chartStatefulSet)
	tmpl := get(sts, "spec", "template").(map[string]any)
	if m, ok := get(values, "podTemplate", "merge").(map[string]any); ok {
		tmpl = mergeOverwrite(tmpl, m)
	}
	ops, _ := get(values, "podTemplate", "patch").([]any)
	for i, op := range ops {
		o, _ := op.(map[string]any)
		if o["op"] != "add" || (o["path"] != "/spec/containers/-" && o["path"] != "/spec/volumes/-") {
			t.Errorf("podTemplate.patch[%d] is %v %v: only adds to the end of containers and volumes keep the chart's own", i, o["op"], o["path"])
		}
	}
	rawOps, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := jsonpatch.DecodePatch(rawOps)
	if err != nil {
		t.Fatalf("podTemplate.patch: %v", err)
	}
	doc, err := json.Marshal(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	if doc, err = patch.Apply(doc); err != nil {
		t.Fatalf("podTemplate.patch does not apply to the chart's pod template: %v", err)
	}
	var patched map[string]any
	if err := json.Unmarshal(doc, &patched); err != nil {
		t.Fatal(err)
	}
	sts["spec"].(map[string]any)["template"] = patched
	return sts
}

// typed decodes generic maps into a Kubernetes type, refusing unknown fields.
func typed[T any](t *testing.T, v any) T {
	t.Helper()
	var out T
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("not a valid %T: %v", out, err)
	}
	return out
}

// envOf returns a container's plain env values, and the fieldRef paths of the others.
func envOf(c corev1.Container) (map[string]string, map[string]string) {
	vals, refs := map[string]string{}, map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			refs[e.Name] = e.ValueFrom.FieldRef.FieldPath
			continue
		}
		vals[e.Name] = e.Value
	}
	return vals, refs
}

// knownEnv are the variables the service reads (main.go), plus the Go runtime's.
var knownEnv = []string{
	"NATS_URL", "NATS_CREDS_FILE", "NATS_SIGNING_KEY_FILE", "NATS_ACCOUNT", "NATS_XKEY_FILE",
	"NATS_SYSTEM_CREDS_FILE", "K8S_IN_CLUSTER", "KUBECONFIG", "JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE", "LOG_LEVEL",
	"LOG_FORMAT", "HTTP_ADDR", "WATCH_NAMESPACES", "USER_JWT_MAX_TTL", "CALLOUT_WORKERS",
	"CALLOUT_REQUEST_TIMEOUT", "DEFAULT_PUB_SUBJECTS", "DEFAULT_SUB_SUBJECTS",
	"JWKS_REFRESH_INTERVAL", "GOMEMLIMIT",
}

// checkSidecar asserts what the patched StatefulSet must look like (server-config mode).
func checkSidecar(t *testing.T, sts appsv1.StatefulSet, secretName string) {
	t.Helper()
	sc := checkSidecarCommon(t, sts, knownEnv, []string{sidecarName})
	spec := sts.Spec.Template.Spec
	if v := spec.Volumes[len(spec.Volumes)-1]; v.Secret == nil || v.Secret.SecretName != secretName || len(v.Secret.Items) > 0 {
		t.Errorf("volume %s = %+v, want the whole Secret %s", v.Name, v.VolumeSource, secretName)
	}
	env, _ := envOf(sc)
	for name, want := range map[string]string{
		"NATS_CREDS_FILE":        filepath.Join(installer.SecretMountDir, installer.SecretKeyService),
		"NATS_SIGNING_KEY_FILE":  filepath.Join(installer.SecretMountDir, installer.SecretKeyIssuer),
		"NATS_XKEY_FILE":         filepath.Join(installer.SecretMountDir, installer.SecretKeyXKey),
		"NATS_SYSTEM_CREDS_FILE": filepath.Join(installer.SecretMountDir, installer.SecretKeySystem),
		"NATS_ACCOUNT":           installer.DefaultTargetAccount,
	} {
		if env[name] != want {
			t.Errorf("env %s = %q, want %q", name, env[name], want)
		}
	}
	if len(sc.VolumeMounts) != 1 {
		t.Fatalf("sidecar mounts %+v, want only the Secret", sc.VolumeMounts)
	}
	m := sc.VolumeMounts[0]
	if m.Name != sidecarName || m.MountPath != installer.SecretMountDir || !m.ReadOnly || m.SubPath != "" || m.SubPathExpr != "" {
		t.Errorf("Secret mount = %+v, want %s read-only at %s as a directory (no subPath)", m, sidecarName, installer.SecretMountDir)
	}
}

// checkSidecarCommon asserts what the sidecar looks like in every mode: the chart's containers
// and volumes untouched, the sidecar after them with the volumes named in volumes, env names
// among known, the shared settings, ports, probes, hardening and resources. It returns the
// sidecar container.
func checkSidecarCommon(t *testing.T, sts appsv1.StatefulSet, known, volumes []string) corev1.Container {
	t.Helper()
	chartSts := typed[appsv1.StatefulSet](t, readYAML(t, chartStatefulSet))
	spec := sts.Spec.Template.Spec
	var names []string
	for _, c := range spec.Containers {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, []string{"nats", "reloader", sidecarName}) {
		t.Fatalf("containers = %v, want the chart's nats and reloader, then %s", names, sidecarName)
	}
	for i := range 2 {
		if !reflect.DeepEqual(spec.Containers[i], chartSts.Spec.Template.Spec.Containers[i]) {
			t.Errorf("the chart's %s container was changed", spec.Containers[i].Name)
		}
	}
	var gotVolumes []string
	for _, v := range spec.Volumes {
		gotVolumes = append(gotVolumes, v.Name)
	}
	if want := append([]string{"config", "pid"}, volumes...); !slices.Equal(gotVolumes, want) {
		t.Fatalf("volumes = %v, want the chart's config and pid, then %v", gotVolumes, volumes)
	}
	if spec.ShareProcessNamespace == nil || !*spec.ShareProcessNamespace || spec.ServiceAccountName != "nats" {
		t.Error("the chart's pod settings (shareProcessNamespace, serviceAccountName) were changed")
	}

	sc := spec.Containers[2]
	if sc.Image == "" || len(sc.Command) > 0 || len(sc.Args) > 0 {
		t.Errorf("sidecar image %q, command %v, args %v: want an image and its entrypoint", sc.Image, sc.Command, sc.Args)
	}
	env, refs := envOf(sc)
	for _, e := range sc.Env {
		if !slices.Contains(known, e.Name) {
			t.Errorf("env %s is not a setting of the service (in this mode)", e.Name)
		}
	}
	for name, want := range map[string]string{
		"NATS_URL":       "nats://127.0.0.1:4222",
		"K8S_IN_CLUSTER": "true",
		"JWT_AUDIENCE":   "nats",
		"HTTP_ADDR":      ":8080",
	} {
		if env[name] != want {
			t.Errorf("env %s = %q, want %q", name, env[name], want)
		}
	}
	wantRef := "metadata.annotations['" + watchNSAnnotation + "']"
	if refs["WATCH_NAMESPACES"] != wantRef {
		t.Errorf("WATCH_NAMESPACES comes from %q, want %q", refs["WATCH_NAMESPACES"], wantRef)
	}
	if _, ok := sts.Spec.Template.Annotations[watchNSAnnotation]; !ok {
		t.Errorf("pod annotation %s is missing: WATCH_NAMESPACES would not resolve", watchNSAnnotation)
	}

	if len(sc.Ports) != 1 || sc.Ports[0].Name != sidecarPort || sc.Ports[0].ContainerPort != 8080 {
		t.Errorf("ports = %+v, want %s 8080", sc.Ports, sidecarPort)
	}
	ports := map[int32]string{}
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if other, dup := ports[p.ContainerPort]; dup {
				t.Errorf("port %d of %s is also %s's: containers share the pod's network", p.ContainerPort, c.Name, other)
			}
			ports[p.ContainerPort] = c.Name
		}
	}
	ann := sts.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != "8080" || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations = %v", ann)
	}

	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", sc.LivenessProbe, "/healthz"}, {"readiness", sc.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != sidecarPort {
			t.Errorf("%s probe = %+v, want GET %s on %s", p.name, p.probe, p.path, sidecarPort)
		}
	}

	s := sc.SecurityContext
	switch {
	case s == nil:
		t.Fatal("sidecar has no securityContext")
	case s.RunAsNonRoot == nil || !*s.RunAsNonRoot, s.RunAsUser == nil || *s.RunAsUser != 65532:
		t.Errorf("sidecar runs as %v (non-root %v), want non-root 65532", s.RunAsUser, s.RunAsNonRoot)
	case s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem:
		t.Error("sidecar root filesystem is writable")
	case s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation:
		t.Error("sidecar allows privilege escalation")
	case s.Capabilities == nil || !slices.Equal(s.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(s.Capabilities.Add) > 0:
		t.Errorf("sidecar capabilities = %+v, want all dropped", s.Capabilities)
	case s.SeccompProfile == nil || s.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("sidecar seccomp = %+v, want RuntimeDefault", s.SeccompProfile)
	case s.Privileged != nil && *s.Privileged:
		t.Error("sidecar is privileged")
	}
	r := sc.Resources
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		t.Errorf("sidecar resources = %+v, want CPU and memory requests and a memory limit", r)
	}
	return sc
}

// writeManifests writes objects as one multi-document YAML file.
func writeManifests(t *testing.T, name string, objs ...any) string {
	t.Helper()
	var b bytes.Buffer
	for _, o := range objs {
		y, err := yaml.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// renderedResources returns extraResources of values, rendered for c.
func renderedResources(t *testing.T, values map[string]any, c chart) []any {
	t.Helper()
	res, err := c.render(values["extraResources"])
	if err != nil {
		t.Fatalf("extraResources do not render: %v", err)
	}
	list, _ := res.([]any)
	if len(list) == 0 {
		t.Fatal("no extraResources")
	}
	return list
}

// renderCalloutRBAC returns the RBAC of helm-values/callout-values.yaml (ClusterRole and
// ClusterRoleBindings) for a release called nats in namespace, bound to serviceAccount, as a
// YAML stream ready for `kubectl apply -f -`. It lets other tests run the service under exactly
// the RBAC users install.
func renderCalloutRBAC(namespace, serviceAccount string) ([]byte, error) {
	data, err := os.ReadFile(calloutValuesFile)
	if err != nil {
		return nil, err
	}
	var values map[string]any
	if err := yaml.Unmarshal(data, &values); err != nil {
		return nil, err
	}
	res, err := chart{release: "nats", namespace: namespace, serviceAccount: serviceAccount}.render(values["extraResources"])
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	for _, o := range res.([]any) {
		y, err := yaml.Marshal(o)
		if err != nil {
			return nil, err
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	return b.Bytes(), nil
}

// canI asks the API server whether the chart's ServiceAccount may do something. groups, if
// given, replace the groups impersonation would otherwise add (system:serviceaccounts, ...), so
// that only bindings naming the ServiceAccount itself count.
func canI(t *testing.T, ns, sa string, groups []string, args ...string) bool {
	t.Helper()
	full := []string{"--kubeconfig", suite.kubeconfig, "auth", "can-i", "--as", "system:serviceaccount:" + ns + ":" + sa}
	for _, g := range groups {
		full = append(full, "--as-group", g)
	}
	full = append(full, args...)
	out, err := exec.Command(suite.kubectl, full...).Output()
	answer := strings.TrimSpace(string(out))
	var exit *exec.ExitError
	switch {
	case err == nil && answer == "yes":
		return true
	case errors.As(err, &exit) && exit.ExitCode() == 1 && strings.HasPrefix(answer, "no"):
		return false
	default:
		t.Fatalf("kubectl auth can-i %s: %v %q", strings.Join(args, " "), err, answer)
		return false
	}
}

func expectCan(t *testing.T, ns, sa string, groups []string, want bool, checks ...[]string) {
	t.Helper()
	for _, c := range checks {
		if got := canI(t, ns, sa, groups, c...); got != want {
			t.Errorf("can %s:%s (groups %v) %s = %v, want %v", ns, sa, groups, strings.Join(c, " "), got, want)
		}
	}
}

// isolated impersonates the ServiceAccount with only system:authenticated, so that the
// default binding of system:service-account-issuer-discovery to all ServiceAccounts does not
// count and our explicit one must do the work.
var isolated = []string{"system:authenticated"}

// deleteOnCleanup removes what a manifest file created, cluster-scoped objects included.
func deleteOnCleanup(t *testing.T, path string) {
	t.Cleanup(func() {
		out, err := exec.Command(suite.kubectl, "--kubeconfig", suite.kubeconfig, "delete", "--ignore-not-found", "--wait=false", "-f", path).CombinedOutput()
		if err != nil {
			t.Errorf("kubectl delete -f %s: %v\n%s", path, err, out)
		}
	})
}

func TestHelmValuesFilesParse(t *testing.T) {
	entries, err := os.ReadDir("../helm-values")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		n++
		readYAML(t, filepath.Join("../helm-values", e.Name()))
	}
	if n < 3 {
		t.Errorf("found %d values files", n)
	}

	// The PodMonitor selects the chart's pods and scrapes the sidecar's port.
	pm := readYAML(t, podMonitorFile)
	sts := typed[appsv1.StatefulSet](t, readYAML(t, chartStatefulSet))
	if pm["kind"] != "PodMonitor" {
		t.Fatalf("podmonitor.yaml is a %v", pm["kind"])
	}
	for k, v := range get(pm, "spec", "selector", "matchLabels").(map[string]any) {
		if sts.Spec.Template.Labels[k] != v {
			t.Errorf("PodMonitor selects %s=%v, the chart's pods have %q", k, v, sts.Spec.Template.Labels[k])
		}
	}
	if ep := get(pm, "spec", "podMetricsEndpoints").([]any)[0].(map[string]any); ep["port"] != sidecarPort || ep["path"] != "/metrics" {
		t.Errorf("PodMonitor endpoint = %v, want %s /metrics", ep, sidecarPort)
	}
}

// TestHelmValuesNeedInit: without the file from init, rendering stops at the placeholders
// with a message saying what to do, rather than sending nats-server a broken config.
func TestHelmValuesNeedInit(t *testing.T) {
	values := readYAML(t, calloutValuesFile)
	_, err := chart{release: "nats", namespace: "nats"}.render(values["config"])
	if err == nil || !strings.Contains(err.Error(), "nats-k8s-oidc-callout init") {
		t.Fatalf("config without init's values renders: %v", err)
	}
}

func TestHelmValuesInstall(t *testing.T) {
	ns := newNamespace(t, "helm-values-"+randomHex(3))
	files, err := installer.GenerateInstall(installer.InstallOptions{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	values := mergeValues(readYAML(t, calloutValuesFile), parseYAML(t, "init's helm-values.yaml", files.HelmValues.Data))
	c := chart{release: "nats", namespace: ns}

	if get(values, "serviceAccount", "enabled") != true {
		t.Error("serviceAccount.enabled is not true: the pod would run as the namespace's default ServiceAccount")
	}

	// init's values fill every placeholder, and what results is init's server config.
	merge, err := c.render(get(values, "config", "merge"))
	if err != nil {
		t.Fatalf("config.merge with init's values: %v", err)
	}
	want, err := files.Config.HelmConfigMerge()
	if err != nil {
		t.Fatal(err)
	}
	gotJSON, _ := json.Marshal(merge)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("config.merge = %s\nwant init's %s", gotJSON, wantJSON)
	}
	// The chart writes config.merge as JSON into nats.conf; the real nats-server must accept it.
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, gotJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(suite.natsServer, "-t", "-c", conf).CombinedOutput(); err != nil {
		t.Errorf("nats-server -t refuses config.merge: %v\n%s", err, out)
	}
	confText := filepath.Join(t.TempDir(), files.ServerConfig.Name)
	if err := os.WriteFile(confText, files.ServerConfig.Data, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(suite.natsServer, "-t", "-c", confText).CombinedOutput(); err != nil {
		t.Errorf("nats-server -t refuses init's %s: %v\n%s", files.ServerConfig.Name, err, out)
	}

	// The pod template, as the chart would render it.
	stsMap := podTemplate(t, values)
	stsMap["metadata"].(map[string]any)["namespace"] = ns
	sts := typed[appsv1.StatefulSet](t, stsMap)
	checkSidecar(t, sts, files.SecretName)
	if got := sts.Spec.Template.Annotations[watchNSAnnotation]; got != "" {
		t.Errorf("cluster-wide values watch namespaces %q", got)
	}

	// The Secret holds every file the sidecar's env names.
	secret := parseYAML(t, "init's secret.yaml", files.Secret.Data)
	_, _, _, err = installer.ParseSecretManifest(files.Secret.Data)
	if err != nil {
		t.Fatal(err)
	}
	env, _ := envOf(sts.Spec.Template.Spec.Containers[2])
	for _, v := range []string{"NATS_CREDS_FILE", "NATS_SIGNING_KEY_FILE", "NATS_XKEY_FILE", "NATS_SYSTEM_CREDS_FILE"} {
		if _, ok := get(secret, "data", filepath.Base(env[v])).(string); !ok || filepath.Dir(env[v]) != installer.SecretMountDir {
			t.Errorf("%s=%s is not a key of the Secret mounted at %s", v, env[v], installer.SecretMountDir)
		}
	}

	// Everything passes the API server's validation.
	rbac := writeManifests(t, "rbac.yaml", renderedResources(t, values, c)...)
	stsFile := writeManifests(t, "statefulset.yaml", stsMap)
	secretFile := filepath.Join(t.TempDir(), files.Secret.Name)
	if err := os.WriteFile(secretFile, files.Secret.Data, 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "--dry-run=server", "-f", rbac, "-f", secretFile, "-f", stsFile)
	// --server-side is what the README tells users to apply the Secret with.
	kubectl(t, "apply", "--server-side", "--dry-run=server", "-f", secretFile)

	// The RBAC grants what the sidecar needs and nothing more.
	newServiceAccount(t, ns, "nats", nil)
	deleteOnCleanup(t, rbac)
	kubectl(t, "apply", "-f", rbac)
	for _, groups := range [][]string{nil, isolated} {
		expectCan(t, ns, "nats", groups, true,
			[]string{"list", "serviceaccounts", "--all-namespaces"},
			[]string{"watch", "serviceaccounts", "--all-namespaces"},
			[]string{"get", "serviceaccounts", "-n", "kube-system"},
			[]string{"get", "/openid/v1/jwks"},
			[]string{"get", "/.well-known/openid-configuration"},
			// VERIFY_BOUND_OBJECTS and BIND_SOURCE_IP.
			[]string{"list", "pods", "--all-namespaces"},
			[]string{"watch", "pods", "--all-namespaces"},
			[]string{"get", "pods", "-n", ns},
			[]string{"get", "nodes"},
		)
		expectCan(t, ns, "nats", groups, false,
			[]string{"create", "serviceaccounts", "-n", ns},
			[]string{"update", "serviceaccounts", "-n", ns},
			[]string{"patch", "serviceaccounts", "--all-namespaces"},
			[]string{"delete", "serviceaccounts", "-n", ns},
			[]string{"create", "serviceaccounts", "--subresource=token", "-n", ns},
			[]string{"get", "secrets", "-n", ns},
			[]string{"delete", "pods", "-n", ns},
			[]string{"get", "pods", "--subresource=log", "-n", ns},
			[]string{"list", "nodes"},
			[]string{"create", "tokenreviews"},
		)
	}
}

// TestHelmValuesImage: the sidecar's image comes from the top-level calloutImage, so one line
// of the user's own (docs/install.md shows it) changes the repository, tag, digest or pull
// policy without repeating the podTemplate.patch list, in both modes' values files.
func TestHelmValuesImage(t *testing.T) {
	guide, err := os.ReadFile(installGuide)
	if err != nil {
		t.Fatal(err)
	}
	var guideLines []string
	for _, line := range strings.Split(string(guide), "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "calloutImage:") {
			guideLines = append(guideLines, line)
		}
	}
	if len(guideLines) == 0 {
		t.Fatalf("%s shows no one-line calloutImage override", installGuide)
	}
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	overrides := append(guideLines,
		"calloutImage: {tag: v9.8.7}",
		"calloutImage: {repository: mirror.example.com/callout, tag: v1.2.3, pullPolicy: Always}",
		"calloutImage: {digest: "+digest+"}",
		"calloutImage: {pullPolicy: \"\"}",
	)
	ns := newNamespace(t, "helm-values-image-"+randomHex(3))
	for _, file := range []string{calloutValuesFile, operatorValuesFile} {
		base := readYAML(t, file)
		if file == operatorValuesFile {
			base = mergeValues(base, parseYAML(t, "account", []byte("podTemplate: {merge: {metadata: {annotations: {"+accountAnnotation+": AAAA}}}}")))
		}
		def := get(base, "calloutImage").(map[string]any)
		for _, o := range append([]string{""}, overrides...) {
			overlay := parseYAML(t, o, []byte(o))
			want := mergeMaps(def, mapOrEmpty(overlay["calloutImage"]))
			wantImage := fmt.Sprintf("%s:%s", want["repository"], want["tag"])
			if d, _ := want["digest"].(string); d != "" {
				wantImage = fmt.Sprintf("%s@%s", want["repository"], d)
			}
			wantPolicy, _ := want["pullPolicy"].(string)

			stsMap := podTemplate(t, mergeValues(base, overlay))
			sts := typed[appsv1.StatefulSet](t, stsMap)
			sc := sts.Spec.Template.Spec.Containers[2]
			if sc.Image != wantImage || string(sc.ImagePullPolicy) != wantPolicy {
				t.Errorf("%s with %q: image %q pull policy %q, want %q %q", file, o, sc.Image, sc.ImagePullPolicy, wantImage, wantPolicy)
			}
			for i, c := range sts.Spec.Template.Spec.Containers[:2] {
				if c.Image != typed[appsv1.StatefulSet](t, readYAML(t, chartStatefulSet)).Spec.Template.Spec.Containers[i].Image {
					t.Errorf("%s with %q changed the chart's %s image", file, o, c.Name)
				}
			}
			if strings.Contains(o, digest) {
				stsMap["metadata"].(map[string]any)["namespace"] = ns
				kubectl(t, "apply", "--dry-run=server", "-f", writeManifests(t, "statefulset.yaml", stsMap))
			}
		}
	}
}

func TestHelmValuesNamespaced(t *testing.T) {
	ns := newNamespace(t, "helm-values-ns-"+randomHex(3))
	teams := []string{newNamespace(t, "team-a-"+randomHex(3)), newNamespace(t, "team-b-"+randomHex(3))}
	other := newNamespace(t, "team-c-"+randomHex(3))
	files, err := installer.GenerateInstall(installer.InstallOptions{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	values := mergeValues(readYAML(t, calloutValuesFile), readYAML(t, namespacedValuesFile), parseYAML(t, "init's helm-values.yaml", files.HelmValues.Data))
	c := chart{release: "nats", namespace: ns}

	// The annotation the sidecar reads names the namespaces the Roles are in.
	stsMap := podTemplate(t, values)
	stsMap["metadata"].(map[string]any)["namespace"] = ns
	sts := typed[appsv1.StatefulSet](t, stsMap)
	checkSidecar(t, sts, files.SecretName)
	watched := strings.Split(sts.Spec.Template.Annotations[watchNSAnnotation], ",")
	resources := renderedResources(t, values, c)
	var roleNS []string
	for _, r := range resources {
		m := r.(map[string]any)
		switch m["kind"] {
		case "ClusterRole":
			t.Errorf("the namespaced values keep a ClusterRole: %v", get(m, "metadata", "name"))
		case "Role", "RoleBinding":
			if n, _ := get(m, "metadata", "namespace").(string); !slices.Contains(roleNS, n) {
				roleNS = append(roleNS, n)
			}
		}
	}
	if !slices.Equal(roleNS, watched) || len(watched) != len(teams) {
		t.Fatalf("Roles are in %v but the sidecar watches %v", roleNS, watched)
	}
	// Move the example namespaces to this test's.
	for _, r := range resources {
		meta := r.(map[string]any)["metadata"].(map[string]any)
		if i := slices.Index(watched, fmt.Sprint(meta["namespace"])); i >= 0 {
			meta["namespace"] = teams[i]
		}
	}

	rbac := writeManifests(t, "rbac-namespaced.yaml", resources...)
	kubectl(t, "apply", "--dry-run=server", "-f", rbac, "-f", writeManifests(t, "statefulset.yaml", stsMap))
	newServiceAccount(t, ns, "nats", nil)
	deleteOnCleanup(t, rbac)
	kubectl(t, "apply", "-f", rbac)
	for _, groups := range [][]string{nil, isolated} {
		for _, team := range teams {
			expectCan(t, ns, "nats", groups, true,
				[]string{"list", "serviceaccounts", "-n", team},
				[]string{"watch", "serviceaccounts", "-n", team},
				[]string{"list", "pods", "-n", team},
				[]string{"watch", "pods", "-n", team},
			)
			expectCan(t, ns, "nats", groups, false,
				[]string{"create", "serviceaccounts", "-n", team},
				[]string{"create", "serviceaccounts", "--subresource=token", "-n", team},
			)
		}
		expectCan(t, ns, "nats", groups, true, []string{"get", "/openid/v1/jwks"})
		expectCan(t, ns, "nats", groups, false,
			[]string{"list", "serviceaccounts", "-n", other},
			[]string{"list", "serviceaccounts", "--all-namespaces"},
			[]string{"list", "pods", "-n", other},
		)
	}
}

// Operator mode: helm-values/callout-values-operator.yaml, used instead of callout-values.yaml
// on a release that already runs nats-server with an operator and a resolver.

const (
	operatorValuesFile = "../helm-values/callout-values-operator.yaml"
	// accountAnnotation is the pod annotation the sidecar reads as NATS_ACCOUNT.
	accountAnnotation = "nats-k8s-oidc-callout/account"
	sentinelCommand   = "nsc describe user --account AUTH --name sentinel --raw"
	appKeyCommand     = "nsc describe account --name APP --field sub"
)

// operatorEnv are the settings the service reads in operator mode only (main.go).
var operatorEnv = []string{
	"NATS_MODE", "NATS_TARGET_SIGNING_KEY_FILE", "NATS_CALLOUT_ACCOUNT_JWT_FILE", "NATS_TARGET_ACCOUNT_JWT_FILE",
}

// operatorSetup is what the operator-mode guide's steps 1 and 3 make with nsc, made here with
// the JWT library: an operator, the accounts SYS, AUTH (the callout: auth_users, allowed_accounts,
// xkey) and APP, the sidecar's files (step 4's Secret and ConfigMap) and the sentinel.
type operatorSetup struct {
	operatorJWT string
	sysPub      string
	appPub      string
	preload     map[string]any // account public key -> account JWT
	sentinel    string         // AUTH's bearer user that may do nothing
	keys        map[string][]byte
	accounts    map[string][]byte
}

func newOperatorSetup(t *testing.T) *operatorSetup {
	t.Helper()
	key := func(create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, string) {
		kp, err := create()
		if err != nil {
			t.Fatal(err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		seed, err := kp.Seed()
		if err != nil {
			t.Fatal(err)
		}
		suite.noteSecret(string(seed), "nkey seed of the operator-mode helm values test")
		return kp, pub
	}
	encode := func(c natsjwt.Claims, kp nkeys.KeyPair) string {
		tok, err := c.Encode(kp)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// An nk file as `nsc generate nkey` writes it: the seed, then the public key.
	nkFile := func(kp nkeys.KeyPair, pub string) []byte {
		seed, err := kp.Seed()
		if err != nil {
			t.Fatal(err)
		}
		return []byte(string(seed) + "\n" + pub + "\n")
	}

	op, opPub := key(nkeys.CreateOperator)
	sys, sysPub := key(nkeys.CreateAccount)
	auth, authPub := key(nkeys.CreateAccount)
	_, appPub := key(nkeys.CreateAccount)
	authSK, authSKPub := key(nkeys.CreateAccount)
	appSK, appSKPub := key(nkeys.CreateAccount)
	xkey, xkeyPub := key(nkeys.CreateCurveKeys)
	svc, svcPub := key(nkeys.CreateUser)
	_, sentinelPub := key(nkeys.CreateUser)

	oc := natsjwt.NewOperatorClaims(opPub)
	oc.Name, oc.SystemAccount = "OP", sysPub
	s := &operatorSetup{operatorJWT: encode(oc, op), sysPub: sysPub, appPub: appPub, preload: map[string]any{}}
	account := func(name, pub string, edit func(*natsjwt.AccountClaims)) string {
		ac := natsjwt.NewAccountClaims(pub)
		ac.Name = name
		if edit != nil {
			edit(ac)
		}
		tok := encode(ac, op)
		s.preload[pub] = tok
		return tok
	}
	account("SYS", sysPub, nil)
	authJWT := account("AUTH", authPub, func(ac *natsjwt.AccountClaims) {
		ac.SigningKeys.Add(authSKPub)
		ac.Authorization.AuthUsers.Add(svcPub)
		ac.Authorization.AllowedAccounts.Add(appPub)
		ac.Authorization.XKey = xkeyPub
	})
	appJWT := account("APP", appPub, func(ac *natsjwt.AccountClaims) { ac.SigningKeys.Add(appSKPub) })

	uc := natsjwt.NewUserClaims(svcPub)
	uc.Name = "callout"
	svcSeed, err := svc.Seed()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := natsjwt.FormatUserConfig(encode(uc, auth), svcSeed)
	if err != nil {
		t.Fatal(err)
	}
	sc := natsjwt.NewUserClaims(sentinelPub)
	sc.Name, sc.BearerToken = "sentinel", true
	sc.Pub.Deny.Add(">")
	sc.Sub.Deny.Add(">")
	s.sentinel = encode(sc, auth)
	// The system account's user (docs/operator-mode.md step 1's secrets/system.creds): live
	// revocation logs in as it.
	sysUser, sysUserPub := key(nkeys.CreateUser)
	sysUserSeed, err := sysUser.Seed()
	if err != nil {
		t.Fatal(err)
	}
	systemCreds, err := natsjwt.FormatUserConfig(encode(natsjwt.NewUserClaims(sysUserPub), sys), sysUserSeed)
	if err != nil {
		t.Fatal(err)
	}

	s.keys = map[string][]byte{
		"callout.creds":   creds,
		"auth-signing.nk": nkFile(authSK, authSKPub),
		"app-signing.nk":  nkFile(appSK, appSKPub),
		"xkey.nk":         nkFile(xkey, xkeyPub),
		"system.creds":    systemCreds,
	}
	s.accounts = map[string][]byte{"auth.jwt": []byte(authJWT + "\n"), "app.jwt": []byte(appJWT + "\n")}
	return s
}

// releaseValues are the values of a release that already runs in operator mode before the
// callout is added: the chart's full NATS resolver (config.resolver) and what
// `nsc generate config --nats-resolver` prints, in config.merge.
func (s *operatorSetup) releaseValues() map[string]any {
	return map[string]any{"config": map[string]any{
		"resolver": map[string]any{
			"enabled": true,
			"merge":   map[string]any{"type": "full", "allow_delete": false, "interval": "2m", "timeout": "1.9s"},
		},
		"merge": map[string]any{
			"operator":         s.operatorJWT,
			"system_account":   s.sysPub,
			"resolver_preload": s.preload,
		},
	}}
}

// userOverlay is the file the top of callout-values-operator.yaml tells users to write (its
// heredoc), with the two nsc commands replaced by what they print for s: the sentinel's JWT, and
// APP's public key in quotes, as `nsc describe account --field sub` prints it. It also checks
// that the helm command there passes this file after callout-values-operator.yaml.
func userOverlay(t *testing.T, s *operatorSetup) map[string]any {
	t.Helper()
	data, err := os.ReadFile(operatorValuesFile)
	if err != nil {
		t.Fatal(err)
	}
	var header []string
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "#") {
			break
		}
		header = append(header, strings.TrimPrefix(strings.TrimPrefix(line, "#"), "   "))
	}
	var name string
	var body []string
	in := false
	for _, line := range header {
		switch {
		case !in && strings.HasPrefix(line, "cat > ") && strings.HasSuffix(line, " <<EOF"):
			in, name = true, strings.TrimSuffix(strings.TrimPrefix(line, "cat > "), " <<EOF")
		case in && line == "EOF":
			in = false
		case in:
			body = append(body, line)
		}
	}
	if name == "" || in || len(body) == 0 {
		t.Fatalf("%s: no `cat > FILE <<EOF ... EOF` in the comment at its top", operatorValuesFile)
	}
	text := strings.Join(body, "\n")
	for cmd, out := range map[string]string{sentinelCommand: s.sentinel, appKeyCommand: `"` + s.appPub + `"`} {
		if !strings.Contains(text, "$("+cmd+")") {
			t.Errorf("%s: the file at its top does not take a value from `%s`:\n%s", operatorValuesFile, cmd, text)
		}
		text = strings.ReplaceAll(text, "$("+cmd+")", out)
	}
	if strings.Contains(text, "$") {
		t.Fatalf("%s: the file at its top has a substitution this test does not know:\n%s", operatorValuesFile, text)
	}
	helm := strings.Join(strings.Fields(strings.ReplaceAll(strings.Join(header, "\n"), "\\\n", " ")), " ")
	want := "helm upgrade nats nats/nats -n nats --reuse-values -f helm-values/callout-values-operator.yaml -f " + name
	if !strings.Contains(helm, want) {
		t.Errorf("%s: the comment at its top does not say `%s`", operatorValuesFile, want)
	}
	return parseYAML(t, "the values file of "+operatorValuesFile+"'s heredoc", []byte(text))
}

// stepFourObjects returns the keys of the Secret and the ConfigMap the operator-mode guide's
// step 4 creates (its kubectl commands' --from-file=KEY=...), by object name.
func stepFourObjects(t *testing.T, doc guideDoc) map[string][]string {
	t.Helper()
	objects := map[string][]string{}
	for _, line := range strings.Split(strings.ReplaceAll(doc.commands(t, 4), "\\\n", " "), "\n") {
		f := strings.Fields(line)
		i := slices.Index(f, "create")
		if len(f) == 0 || f[0] != "kubectl" || i < 0 || i+2 >= len(f) {
			continue
		}
		name := f[i+2]
		if f[i+1] == "secret" {
			name = f[i+3]
		}
		for _, a := range f {
			if k, ok := strings.CutPrefix(a, "--from-file="); ok {
				objects[name] = append(objects[name], strings.SplitN(k, "=", 2)[0])
			}
		}
	}
	if len(objects[guideSecret]) == 0 || len(objects[guideConfigMap]) == 0 {
		t.Fatalf("%s step 4: no keys for %s and %s in %v", guideFile, guideSecret, guideConfigMap, objects)
	}
	return objects
}

// checkOperatorSidecar asserts the operator-mode sidecar: what every mode has, the Secret and
// the ConfigMap of the operator-mode guide's step 4 mounted whole as read-only directories,
// and exactly the settings of step 4's table, NATS_ACCOUNT read from the pod annotation.
func checkOperatorSidecar(t *testing.T, sts appsv1.StatefulSet) {
	t.Helper()
	sc := checkSidecarCommon(t, sts, slices.Concat(knownEnv, operatorEnv), []string{guideSecret, guideConfigMap})
	spec := sts.Spec.Template.Spec
	if v := spec.Volumes[2]; v.Secret == nil || v.Secret.SecretName != guideSecret || len(v.Secret.Items) > 0 || v.Secret.Optional != nil {
		t.Errorf("volume %s = %+v, want the whole Secret %s", v.Name, v.VolumeSource, guideSecret)
	}
	if v := spec.Volumes[3]; v.ConfigMap == nil || v.ConfigMap.Name != guideConfigMap || len(v.ConfigMap.Items) > 0 || v.ConfigMap.Optional != nil {
		t.Errorf("volume %s = %+v, want the whole ConfigMap %s", v.Name, v.VolumeSource, guideConfigMap)
	}

	// Mounted as directories, read-only; the object each directory holds.
	mountedAt := map[string]string{}
	for _, m := range sc.VolumeMounts {
		if !m.ReadOnly || m.SubPath != "" || m.SubPathExpr != "" || m.MountPath == "" {
			t.Errorf("mount %+v: want read-only, as a directory (no subPath)", m)
		}
		mountedAt[m.MountPath] = m.Name
	}
	if len(sc.VolumeMounts) != 2 || len(mountedAt) != 2 || !slices.Contains(slices.Collect(maps.Values(mountedAt)), guideSecret) ||
		!slices.Contains(slices.Collect(maps.Values(mountedAt)), guideConfigMap) {
		t.Fatalf("sidecar mounts %+v, want %s and %s, each once", sc.VolumeMounts, guideSecret, guideConfigMap)
	}

	// The settings are step 4's table; every file is a key of the object mounted at its
	// directory, as step 4's kubectl commands create it.
	doc := readGuide(t, 4222)
	table := doc.table(t, 4)
	objects := stepFourObjects(t, doc)
	env, refs := envOf(sc)
	for _, k := range requiredSettings {
		if _, ok := table[k]; !ok {
			t.Fatalf("%s step 4's table has no %s", guideFile, k)
		}
	}
	for k, v := range table {
		switch {
		case k == "NATS_ACCOUNT":
			want := "metadata.annotations['" + accountAnnotation + "']"
			if refs[k] != want {
				t.Errorf("NATS_ACCOUNT comes from %q (value %q), want the annotation: %q", refs[k], env[k], want)
			}
		case env[k] != v:
			t.Errorf("env %s = %q, want %q (%s, step 4)", k, env[k], v, guideFile)
		case strings.HasPrefix(v, "/"):
			obj := mountedAt[filepath.Dir(v)]
			if !slices.Contains(objects[obj], filepath.Base(v)) {
				t.Errorf("%s=%s: %s is not a key of %q mounted at %s (keys %v)", k, v, filepath.Base(v), obj, filepath.Dir(v), objects[obj])
			}
		}
	}
	if _, ok := sts.Spec.Template.Annotations[accountAnnotation]; !ok {
		t.Errorf("pod annotation %s is missing: NATS_ACCOUNT would be empty", accountAnnotation)
	}
}

// TestHelmValuesOperatorNeedsSettings: until the user's file sets the sentinel and APP's key,
// rendering stops at a placeholder that says which nsc command gives the value.
func TestHelmValuesOperatorNeedsSettings(t *testing.T) {
	values := readYAML(t, operatorValuesFile)
	c := chart{release: "nats", namespace: "nats", values: values}
	for _, p := range []struct {
		part, want string
	}{{"config", sentinelCommand}, {"podTemplate", appKeyCommand}} {
		if _, err := c.render(values[p.part]); err == nil || !strings.Contains(err.Error(), p.want) {
			t.Errorf("%s without the user's values renders: %v (want a message naming `%s`)", p.part, err, p.want)
		}
	}

	sentinel := parseYAML(t, "sentinel only", []byte("config: {merge: {default_sentinel: eyJhbGciOi.eyJqdGkiOi.c2ln}}"))
	account := parseYAML(t, "account only", []byte("podTemplate: {merge: {metadata: {annotations: {"+accountAnnotation+": AAAA}}}}"))
	for _, p := range []struct {
		what    string
		overlay map[string]any
		want    string
	}{{"the sentinel only", sentinel, appKeyCommand}, {"APP's key only", account, sentinelCommand}} {
		if _, err := c.renderValues(mergeValues(values, p.overlay)); err == nil || !strings.Contains(err.Error(), p.want) {
			t.Errorf("with %s, the values render: %v (want a message naming `%s`)", p.what, err, p.want)
		}
	}
	if _, err := c.renderValues(mergeValues(values, sentinel, account)); err != nil {
		t.Errorf("with both values: %v", err)
	}
}

func TestHelmValuesOperator(t *testing.T) {
	ns := newNamespace(t, "helm-values-op-"+randomHex(3))
	s := newOperatorSetup(t)
	file := readYAML(t, operatorValuesFile)
	release := s.releaseValues()
	// helm upgrade --reuse-values -f callout-values-operator.yaml -f <the user's file>
	values := mergeValues(release, file, userOverlay(t, s))
	c := chart{release: "nats", namespace: ns}

	// The file adds the sentinel to the server config and nothing else: no accounts, no
	// authorization block (nats-server refuses auth_callout in it with an operator), no
	// resolver. The release's operator-mode settings are kept as they were.
	for k := range file {
		if !slices.Contains([]string{"calloutImage", "serviceAccount", "config", "podTemplate", "extraResources"}, k) {
			t.Errorf("%s sets %s", operatorValuesFile, k)
		}
	}
	if keys := slices.Sorted(maps.Keys(file["config"].(map[string]any))); !slices.Equal(keys, []string{"merge"}) {
		t.Errorf("%s sets config.%v, want config.merge only", operatorValuesFile, keys)
	}
	if keys := slices.Sorted(maps.Keys(get(file, "config", "merge").(map[string]any))); !slices.Equal(keys, []string{"default_sentinel"}) {
		t.Errorf("%s sets config.merge.%v, want default_sentinel only", operatorValuesFile, keys)
	}
	if get(values, "serviceAccount", "enabled") != true {
		t.Error("serviceAccount.enabled is not true: the pod would run as the namespace's default ServiceAccount")
	}
	// The chart templates every value ($tplYaml anywhere in .Values), then uses them.
	r, err := c.renderValues(values)
	if err != nil {
		t.Fatalf("the values with the user's file: %v", err)
	}
	rendered := r.(map[string]any)
	wantConfig := mergeMaps(release["config"].(map[string]any), map[string]any{"merge": map[string]any{"default_sentinel": s.sentinel}})
	gotJSON, _ := json.Marshal(rendered["config"])
	wantJSON, _ := json.Marshal(wantConfig)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("config = %s\nwant the release's operator-mode config plus default_sentinel: %s", gotJSON, wantJSON)
	}

	// The pod template, as the chart would render it.
	stsMap := podTemplate(t, rendered)
	stsMap["metadata"].(map[string]any)["namespace"] = ns
	sts := typed[appsv1.StatefulSet](t, stsMap)
	checkOperatorSidecar(t, sts)
	if got := sts.Spec.Template.Annotations[accountAnnotation]; got != s.appPub {
		t.Errorf("annotation %s = %q, want APP's public key %s", accountAnnotation, got, s.appPub)
	}
	if got := sts.Spec.Template.Annotations[watchNSAnnotation]; got != "" {
		t.Errorf("cluster-wide values watch namespaces %q", got)
	}

	// callout-values-namespaced.yaml works after this file as after callout-values.yaml.
	nsValues, err := c.renderValues(mergeValues(release, file, readYAML(t, namespacedValuesFile), userOverlay(t, s)))
	if err != nil {
		t.Fatal(err)
	}
	nsSts := typed[appsv1.StatefulSet](t, podTemplate(t, nsValues.(map[string]any)))
	if got := nsSts.Spec.Template.Annotations[watchNSAnnotation]; got != "team-a,team-b" {
		t.Errorf("with callout-values-namespaced.yaml the sidecar watches %q", got)
	}
	for _, res := range renderedResources(t, nsValues.(map[string]any), c) {
		if get(res, "kind") == "ClusterRole" {
			t.Error("with callout-values-namespaced.yaml a ClusterRole is left")
		}
	}

	// The same RBAC as callout-values.yaml, and everything passes the API server's validation.
	resources := renderedResources(t, rendered, c)
	gotJSON, _ = json.Marshal(resources)
	wantJSON, _ = json.Marshal(renderedResources(t, readYAML(t, calloutValuesFile), c))
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("extraResources = %s\nwant callout-values.yaml's %s", gotJSON, wantJSON)
	}
	rbac := writeManifests(t, "rbac.yaml", resources...)
	kubectl(t, "apply", "--dry-run=server", "-f", rbac, "-f", writeManifests(t, "statefulset.yaml", stsMap))
	newServiceAccount(t, ns, "nats", nil)
	deleteOnCleanup(t, rbac)
	kubectl(t, "apply", "-f", rbac)
	expectCan(t, ns, "nats", isolated, true,
		[]string{"list", "serviceaccounts", "--all-namespaces"},
		[]string{"watch", "serviceaccounts", "--all-namespaces"},
		[]string{"get", "/openid/v1/jwks"},
	)
	expectCan(t, ns, "nats", isolated, false,
		[]string{"create", "serviceaccounts", "--subresource=token", "-n", ns},
		[]string{"get", "secrets", "-n", ns},
		[]string{"get", "configmaps", "-n", ns},
	)

	t.Run("the service runs with the rendered sidecar's settings", func(t *testing.T) {
		runOperatorSidecar(t, s, rendered, sts, ns)
	})
}

// runOperatorSidecar runs nats-server with the server config the chart would write for values
// (the release's resolver and config.merge, default_sentinel included) and the service binary
// with exactly the rendered sidecar's environment: the downward API resolved from the pod's
// annotations, the files under a directory laid out like the kubelet's mounts of step 4's
// Secret and ConfigMap. Only what points at a cluster is replaced: the nats-server port, the
// Kubernetes API (a kubeconfig instead of in-cluster), its issuer and the HTTP address. A pod
// that presents only its token is then placed in APP.
func runOperatorSidecar(t *testing.T, s *operatorSetup, values map[string]any, sts appsv1.StatefulSet, ns string) {
	dir := testDir(t)

	// nats.conf as the chart renders it: config.resolver (its directory and merge), then
	// config.merge on top; the chart writes it as JSON.
	srv := &natsServer{name: "nats-server", dir: dir, confPath: filepath.Join(dir, "nats.conf"), port: freePort(t), httpPort: freePort(t)}
	conf := map[string]any{}
	if get(values, "config", "resolver", "enabled") == true {
		resolver := map[string]any{"dir": filepath.Join(dir, "resolver")}
		if m, ok := get(values, "config", "resolver", "merge").(map[string]any); ok {
			resolver = mergeOverwrite(resolver, m)
		}
		conf["resolver"] = resolver
	}
	conf = mergeOverwrite(conf, get(values, "config", "merge").(map[string]any))
	confJSON, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, srv.confPath, confJSON)
	if out, err := exec.Command(suite.natsServer, append(srv.args(), "-t")...).CombinedOutput(); err != nil {
		t.Fatalf("nats-server refuses the rendered config: %v\n%s", err, out)
	}
	srv.start(t)

	// The sidecar's volumes, where its mounts put them.
	spec := sts.Spec.Template.Spec
	sc := spec.Containers[2]
	root := filepath.Join(dir, "mnt")
	var mounts []string
	for _, m := range sc.VolumeMounts {
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		var files map[string][]byte
		switch v := spec.Volumes[i]; {
		case v.Secret != nil && v.Secret.SecretName == guideSecret:
			files = s.keys
		case v.ConfigMap != nil && v.ConfigMap.Name == guideConfigMap:
			files = s.accounts
		default:
			t.Fatalf("mount %s: volume %+v is neither %s nor %s", m.Name, v.VolumeSource, guideSecret, guideConfigMap)
		}
		newSecretVolume(t, filepath.Join(root, m.MountPath), files)
		mounts = append(mounts, m.MountPath)
	}

	// The container's environment, resolved as the kubelet does.
	svc := &calloutService{name: "callout", dir: dir, httpAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	// JWT_ISSUER stays as the file has it (auto): discovered from the API server.
	replace := map[string]string{
		"NATS_URL":       srv.url(),
		"K8S_IN_CLUSTER": "false",
		"HTTP_ADDR":      svc.httpAddr,
	}
	svc.env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "KUBECONFIG=" + suite.serviceKubeconfig}
	for _, e := range sc.Env {
		v := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil || !strings.HasPrefix(e.ValueFrom.FieldRef.FieldPath, "metadata.annotations['") {
				t.Fatalf("env %s: %+v is not a pod annotation", e.Name, e.ValueFrom)
			}
			name := strings.TrimSuffix(strings.TrimPrefix(e.ValueFrom.FieldRef.FieldPath, "metadata.annotations['"), "']")
			// A missing annotation is an empty value, as with the kubelet.
			v = sts.Spec.Template.Annotations[name]
		}
		if slices.ContainsFunc(mounts, func(m string) bool { return strings.HasPrefix(v, m+"/") }) {
			v = filepath.Join(root, v)
		}
		if r, ok := replace[e.Name]; ok {
			v = r
			delete(replace, e.Name)
		}
		svc.env = append(svc.env, e.Name+"="+v)
	}
	if len(replace) > 0 {
		t.Fatalf("the sidecar does not set %v", slices.Sorted(maps.Keys(replace)))
	}
	t.Cleanup(func() { checkLogHoldsNoSecrets(t, svc.p) })
	svc.start(t)
	// The start-up checks passed (it started), and the files agree.
	wantSetupOK(t, svc, true)

	// A pod with only its token: the default sentinel takes it to the callout, and the callout
	// places it in APP with its namespace's subjects.
	newServiceAccount(t, ns, "orders", nil)
	tok := kubectlToken(t, ns, "orders", "nats")
	nc := connectWhenKnown(t, srv.url(), tok, nats.Name("helm-values-operator"))
	if err := nc.Publish(ns+".orders.created", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := flushErr(nc); err != nil {
		t.Errorf("publish to %s.orders.created: %v", ns, err)
	}
	conns, err := srv.connz()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(conns, func(c connInfo) bool { return c.Name == "helm-values-operator" })
	if i < 0 || conns[i].Account != s.appPub {
		t.Errorf("the token client's connection %+v, want it in APP (%s)", conns, s.appPub)
	}
	if got := svc.requests(t, "result", "allowed"); got < 1 {
		t.Errorf("allowed callouts = %g", got)
	}
}

// sidecarSeries runs a sidecar that has made decisions (one login allowed, one refused) in
// namespace ns and returns the series its /metrics exports, each with its label names: a
// histogram under its own name and its _bucket, _sum and _count series.
func sidecarSeries(t *testing.T, ns string) map[string]map[string]bool {
	t.Helper()
	// As the Helm values run it: with live revocation, which closes one connection here.
	d := newDeployment(t, deployOpts{revocation: true})
	newNamespace(t, ns)
	newServiceAccount(t, ns, "app", nil)
	connectWhenKnown(t, d.nats.url(), token(t, ns, "app")).Close()
	wantRefused(t, d, "malformed_token", nats.Token("not-a-token"))
	newServiceAccount(t, ns, "leaving", nil)
	held := connectWhenKnown(t, d.nats.url(), token(t, ns, "leaving"))
	defer held.Close()
	if err := suite.kube.CoreV1().ServiceAccounts(ns).Delete(context.Background(), "leaving", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the leaving connection revoked", func() error {
		if n := d.svc.metrics(t).sum("nats_callout_revocations_total"); n != 1 {
			return fmt.Errorf("%v revoked", n)
		}
		return nil
	})
	exported := map[string]map[string]bool{}
	add := func(name string, labels map[string]string) {
		if exported[name] == nil {
			exported[name] = map[string]bool{}
		}
		for l := range labels {
			exported[name][l] = true
		}
	}
	for _, s := range d.svc.metrics(t) {
		add(s.name, s.labels)
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(s.name, "_bucket"), "_sum"), "_count")
		if base != s.name {
			add(base, s.labels)
		}
	}
	// Exported in operator mode only; TestOperatorGuide reads it from a running sidecar.
	add("nats_callout_operator_setup_ok", nil)
	return exported
}

// helm-values/prometheusrule.yaml: a well-formed PrometheusRule whose every alert names series
// the sidecar really exports (read from a running one that has made decisions).
func TestPrometheusRule(t *testing.T) {
	t.Parallel()
	rule := readYAML(t, "../helm-values/prometheusrule.yaml")
	if rule["kind"] != "PrometheusRule" || rule["apiVersion"] != "monitoring.coreos.com/v1" {
		t.Fatalf("prometheusrule.yaml is %v %v", rule["apiVersion"], rule["kind"])
	}
	exported := sidecarSeries(t, "alerts")

	metricRE := regexp.MustCompile(`\bnats_callout_[a-z_]+`)
	alerts := 0
	for _, g := range typed[[]any](t, get(rule, "spec", "groups")) {
		for _, r := range typed[[]any](t, get(g, "rules")) {
			name, _ := get(r, "alert").(string)
			expr, _ := get(r, "expr").(string)
			severity, _ := get(r, "labels", "severity").(string)
			summary, _ := get(r, "annotations", "summary").(string)
			if name == "" || expr == "" || summary == "" || (severity != "warning" && severity != "critical") {
				t.Errorf("rule %v: want alert, expr, labels.severity (warning or critical) and annotations.summary", r)
				continue
			}
			alerts++
			names := metricRE.FindAllString(expr, -1)
			if len(names) == 0 {
				t.Errorf("alert %s uses none of the sidecar's series: %s", name, expr)
			}
			for _, m := range names {
				if exported[m] == nil {
					t.Errorf("alert %s uses %s, which the sidecar does not export", name, m)
				}
			}
		}
	}
	if alerts < 5 {
		t.Errorf("%d alerts, want the set the file documents", alerts)
	}
}
