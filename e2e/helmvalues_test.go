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
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"text/template"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
)

const (
	calloutValuesFile    = "../helm-values/callout-values.yaml"
	namespacedValuesFile = "../helm-values/callout-values-namespaced.yaml"
	podMonitorFile       = "../helm-values/podmonitor.yaml"
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
}

// fullname is the chart's nats.fullname for a release without name overrides.
func (c chart) fullname() string {
	if strings.Contains(c.release, "nats") {
		return c.release
	}
	return c.release + "-nats"
}

// render evaluates every `$tplYaml` in v as the chart does (a Go template with the chart's
// helpers, the result parsed as YAML). The templates use only include, quote, fail and
// .Values.serviceAccount.name; anything else is an error, so that a template the chart could
// not render does not pass here.
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
	ctx := map[string]any{
		"Values":  map[string]any{"serviceAccount": map[string]any{"name": sa}},
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

// podTemplate applies podTemplate.merge and podTemplate.patch of values to the chart's
// StatefulSet, in the chart's order, and returns the StatefulSet as generic maps.
func podTemplate(t *testing.T, values map[string]any) map[string]any {
	t.Helper()
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
	"K8S_IN_CLUSTER", "KUBECONFIG", "JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE", "LOG_LEVEL",
	"LOG_FORMAT", "HTTP_ADDR", "WATCH_NAMESPACES", "USER_JWT_MAX_TTL", "CALLOUT_WORKERS",
	"CALLOUT_REQUEST_TIMEOUT", "DEFAULT_PUB_SUBJECTS", "DEFAULT_SUB_SUBJECTS",
	"JWKS_REFRESH_INTERVAL", "GOMEMLIMIT",
}

// checkSidecar asserts what the patched StatefulSet must look like.
func checkSidecar(t *testing.T, sts appsv1.StatefulSet, secretName string) {
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
	var volumes []string
	for _, v := range spec.Volumes {
		volumes = append(volumes, v.Name)
	}
	if !slices.Equal(volumes, []string{"config", "pid", sidecarName}) {
		t.Errorf("volumes = %v, want the chart's config and pid, then %s", volumes, sidecarName)
	}
	if v := spec.Volumes[len(spec.Volumes)-1]; v.Secret == nil || v.Secret.SecretName != secretName || len(v.Secret.Items) > 0 {
		t.Errorf("volume %s = %+v, want the whole Secret %s", v.Name, v.VolumeSource, secretName)
	}
	if spec.ShareProcessNamespace == nil || !*spec.ShareProcessNamespace || spec.ServiceAccountName != "nats" {
		t.Error("the chart's pod settings (shareProcessNamespace, serviceAccountName) were changed")
	}

	sc := spec.Containers[2]
	if sc.Image == "" || len(sc.Command) > 0 || len(sc.Args) > 0 {
		t.Errorf("sidecar image %q, command %v, args %v: want an image and its entrypoint", sc.Image, sc.Command, sc.Args)
	}
	env, refs := envOf(sc)
	for name := range env {
		if !slices.Contains(knownEnv, name) {
			t.Errorf("env %s is not a setting of the service", name)
		}
	}
	for name, want := range map[string]string{
		"NATS_URL":              "nats://127.0.0.1:4222",
		"NATS_CREDS_FILE":       filepath.Join(callout.SecretMountDir, callout.SecretKeyService),
		"NATS_SIGNING_KEY_FILE": filepath.Join(callout.SecretMountDir, callout.SecretKeyIssuer),
		"NATS_XKEY_FILE":        filepath.Join(callout.SecretMountDir, callout.SecretKeyXKey),
		"NATS_ACCOUNT":          callout.DefaultTargetAccount,
		"K8S_IN_CLUSTER":        "true",
		"JWT_AUDIENCE":          "nats",
		"HTTP_ADDR":             ":8080",
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

	if len(sc.VolumeMounts) != 1 {
		t.Fatalf("sidecar mounts %+v, want only the Secret", sc.VolumeMounts)
	}
	m := sc.VolumeMounts[0]
	if m.Name != sidecarName || m.MountPath != callout.SecretMountDir || !m.ReadOnly || m.SubPath != "" || m.SubPathExpr != "" {
		t.Errorf("Secret mount = %+v, want %s read-only at %s as a directory (no subPath)", m, sidecarName, callout.SecretMountDir)
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
	files, err := callout.GenerateInstall(callout.InstallOptions{Namespace: ns})
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
	_, _, _, err = callout.ParseSecretManifest(files.Secret.Data)
	if err != nil {
		t.Fatal(err)
	}
	env, _ := envOf(sts.Spec.Template.Spec.Containers[2])
	for _, v := range []string{"NATS_CREDS_FILE", "NATS_SIGNING_KEY_FILE", "NATS_XKEY_FILE"} {
		if _, ok := get(secret, "data", filepath.Base(env[v])).(string); !ok || filepath.Dir(env[v]) != callout.SecretMountDir {
			t.Errorf("%s=%s is not a key of the Secret mounted at %s", v, env[v], callout.SecretMountDir)
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
		)
		expectCan(t, ns, "nats", groups, false,
			[]string{"create", "serviceaccounts", "-n", ns},
			[]string{"update", "serviceaccounts", "-n", ns},
			[]string{"patch", "serviceaccounts", "--all-namespaces"},
			[]string{"delete", "serviceaccounts", "-n", ns},
			[]string{"create", "serviceaccounts", "--subresource=token", "-n", ns},
			[]string{"get", "secrets", "-n", ns},
			[]string{"list", "pods", "--all-namespaces"},
			[]string{"create", "tokenreviews"},
		)
	}
}

func TestHelmValuesNamespaced(t *testing.T) {
	ns := newNamespace(t, "helm-values-ns-"+randomHex(3))
	teams := []string{newNamespace(t, "team-a-"+randomHex(3)), newNamespace(t, "team-b-"+randomHex(3))}
	other := newNamespace(t, "team-c-"+randomHex(3))
	files, err := callout.GenerateInstall(callout.InstallOptions{Namespace: ns})
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
		)
	}
}
