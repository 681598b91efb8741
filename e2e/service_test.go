//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// calloutService is one instance of the built service binary, configured the way the sidecar
// runs: NATS over loopback, credentials from a Secret volume, Kubernetes through a kubeconfig
// holding its own ServiceAccount's token.
type calloutService struct {
	name     string
	dir      string
	httpAddr string
	env      []string
	p        *proc
}

type serviceOpts struct {
	// xkey points NATS_XKEY_FILE at the volume's xkey.nk.
	xkey bool
	// env adds or overrides settings, e.g. "USER_JWT_MAX_TTL=5s".
	env []string
}

func startService(t *testing.T, dir, name, natsURL string, vol *secretVolume, o serviceOpts) *calloutService {
	t.Helper()
	s := &calloutService{name: name, dir: dir, httpAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	s.env = []string{
		"PATH=/usr/bin:/bin",
		"HOME=" + dir,
		"NATS_URL=" + natsURL,
		"NATS_CREDS_FILE=" + vol.path(keyService),
		"NATS_SIGNING_KEY_FILE=" + vol.path(keyIssuer),
		"NATS_ACCOUNT=APP",
		"K8S_IN_CLUSTER=false",
		"KUBECONFIG=" + suite.serviceKubeconfig,
		"JWT_ISSUER=" + suite.issuer,
		"JWT_AUDIENCE=nats",
		"HTTP_ADDR=" + s.httpAddr,
		// Debug logs say the most, so the log check below covers the most.
		"LOG_LEVEL=debug",
	}
	if o.xkey {
		s.env = append(s.env, "NATS_XKEY_FILE="+vol.path(keyXKey))
	}
	s.env = append(s.env, o.env...)
	// Registered before the process, so it runs after the process has stopped.
	t.Cleanup(func() { checkLogHoldsNoSecrets(t, s.p) })
	s.start(t)
	return s
}

func (s *calloutService) start(t *testing.T) {
	t.Helper()
	s.p = startProc(t, s.dir, s.name, suite.serviceBin, nil, s.env)
	p := s.p
	t.Cleanup(func() {
		// Every instance must stop cleanly on SIGTERM, whatever the test did with it.
		if code := p.stop(t); code != 0 {
			t.Errorf("service %s exited with %d on SIGTERM, want 0", s.name, code)
		}
	})
	s.waitReady(t)
}

// waitReady polls /readyz until it answers 200.
func (s *calloutService) waitReady(t *testing.T) {
	t.Helper()
	eventually(t, 30*time.Second, "service "+s.name+" ready", func() error {
		if !s.p.running() {
			t.Fatalf("service %s exited:\n%s", s.name, s.p.tail(30))
		}
		code, body, err := s.get("/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("/readyz %d: %s", code, body)
		}
		return nil
	})
}

func (s *calloutService) get(path string) (int, string, error) {
	resp, err := httpClient.Get("http://" + s.httpAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// stop sends SIGTERM and requires exit code 0.
func (s *calloutService) stop(t *testing.T) {
	t.Helper()
	if code := s.p.stop(t); code != 0 {
		t.Errorf("service %s exited with %d on SIGTERM, want 0", s.name, code)
	}
}

// restart starts a stopped instance again with the same settings.
func (s *calloutService) restart(t *testing.T) {
	t.Helper()
	s.start(t)
}

// metrics scrapes /metrics.
func (s *calloutService) metrics(t *testing.T) metricSet {
	t.Helper()
	code, body, err := s.get("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /metrics of %s: %d %v", s.name, code, err)
	}
	return parseMetrics(body)
}

// requests sums nats_callout_requests_total over the given label pairs ("result", "denied", ...).
func (s *calloutService) requests(t *testing.T, labels ...string) float64 {
	t.Helper()
	return s.metrics(t).sum("nats_callout_requests_total", labels...)
}

// metricSet is a parsed Prometheus text exposition.
type metricSet []sample

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var labelRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

func parseMetrics(text string) metricSet {
	var out metricSet
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		key := line[:i]
		smp := sample{name: key, labels: map[string]string{}, value: v}
		if j := strings.IndexByte(key, '{'); j >= 0 {
			smp.name = key[:j]
			for _, m := range labelRE.FindAllStringSubmatch(key[j:], -1) {
				smp.labels[m[1]] = m[2]
			}
		}
		out = append(out, smp)
	}
	return out
}

// sum adds up the samples of name whose labels include every given pair.
func (m metricSet) sum(name string, labels ...string) float64 {
	var total float64
next:
	for _, s := range m {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if s.labels[labels[i]] != labels[i+1] {
				continue next
			}
		}
		total += s.value
	}
	return total
}

// String lists the samples of the callout's request counter, for failure messages.
func (m metricSet) requestsString() string {
	var lines []string
	for _, s := range m {
		if s.name == "nats_callout_requests_total" && s.value > 0 {
			lines = append(lines, fmt.Sprintf("%s/%s=%g", s.labels["result"], s.labels["reason"], s.value))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, " ")
}

var (
	// Any nkey seed: S, a key-type letter, then 56 base32 characters (public keys never start
	// with S).
	seedRE = regexp.MustCompile(`\bS[AUONXCP][A-Z2-7]{56}\b`)
	// Any JWT: the header and claims of every JWT start with base64 of `{"`.
	jwtRE = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}`)
)

// checkLogHoldsNoSecrets fails the test if the service's log contains any token, seed or
// password minted in this run, or anything shaped like a seed or a JWT.
func checkLogHoldsNoSecrets(t *testing.T, p *proc) {
	t.Helper()
	if p == nil {
		return
	}
	log := p.log()
	if log == "" {
		t.Errorf("service log %s is empty; the log check needs the service's output", p.logPath)
		return
	}
	for _, leak := range leaksIn(log) {
		t.Errorf("service log %s contains %s", p.logPath, leak)
	}
}

// leaksIn describes (without repeating them) the secrets found in log.
func leaksIn(log string) []string {
	var leaks []string
	for secret, what := range suite.knownSecrets() {
		if strings.Contains(log, secret) {
			leaks = append(leaks, "a secret: "+what)
		}
	}
	if m := seedRE.FindString(log); m != "" {
		leaks = append(leaks, fmt.Sprintf("something shaped like an nkey seed (%s...)", m[:2]))
	}
	if jwtRE.MatchString(log) {
		leaks = append(leaks, "something shaped like a JWT")
	}
	return leaks
}
