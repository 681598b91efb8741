//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestLoad drives real clients with real ServiceAccount tokens through a real nats-server, first
// answered by the service, then by e2e/floor (a callout doing only the protocol's own work:
// verify the request, verify the RS256 token, sign the user JWT and the response), and prints
// for each: connects/s, connect latency p50/p99, and the callout process's CPU time per
// connect. The ratio of the two CPU figures is what the service costs beyond the protocol.
//
//	make load          (E2E_LOAD_CONNECTS=1000 E2E_LOAD_RUNS=3 scripts/e2e.sh -run TestLoad)
//
// In the regular suite it runs small (200 connects, one run) and checks only that every
// connect succeeds; figures come from the printed table, never from assertions.
func TestLoad(t *testing.T) {
	connects, runs := envInt(t, "E2E_LOAD_CONNECTS", 200), envInt(t, "E2E_LOAD_RUNS", 1)
	d, _ := newNATSDeployment(t, deployOpts{})
	url := d.nats.url()

	ns := newNamespace(t, "load")
	const accounts = 10
	tokens := make([]string, accounts)
	for i := range accounts {
		name := fmt.Sprintf("app-%d", i)
		newServiceAccount(t, ns, name, map[string]string{"nats.io/allowed-pub-subjects": "shared.events"})
		tokens[i] = token(t, ns, name)
	}
	jwks, err := suite.kube.Discovery().RESTClient().Get().AbsPath("/openid/v1/jwks").DoRaw(context.Background())
	if err != nil {
		t.Fatalf("GET /openid/v1/jwks: %v", err)
	}
	jwksFile := filepath.Join(d.dir, "jwks.json")
	writeFile(t, jwksFile, jwks)

	callouts := []struct {
		name  string
		start func() *proc
	}{
		{"service", func() *proc {
			d.svc = startService(t, d.dir, fmt.Sprintf("callout-%d", time.Now().UnixNano()), url, d.vol, serviceOpts{env: []string{"LOG_LEVEL=info"}})
			connectWhenKnown(t, url, tokens[accounts-1]).Close()
			return d.svc.p
		}},
		{"floor", func() *proc {
			p := startProc(t, d.dir, fmt.Sprintf("floor-%d", time.Now().UnixNano()), suite.floorBin, nil, []string{
				"NATS_URL=" + url, "FLOOR_SERVICE_SEED_FILE=" + d.vol.path(keyService), "FLOOR_ISSUER_SEED_FILE=" + d.vol.path(keyIssuer),
				"FLOOR_JWKS_FILE=" + jwksFile, "JWT_ISSUER=" + suite.issuer, "JWT_AUDIENCE=nats", "NATS_ACCOUNT=APP",
			})
			connectWhenKnown(t, url, tokens[0]).Close()
			return p
		}},
	}
	var rows []string
	for run := 1; run <= runs; run++ {
		cpu := map[string]float64{}
		for _, c := range callouts {
			p := c.start()
			before := procCPU(t, p.pid())
			seq := loadConnects(t, url, tokens, connects, 1)
			conc := loadConnects(t, url, tokens, connects, 50)
			cpu[c.name] = (procCPU(t, p.pid()) - before).Seconds() / float64(2*connects)
			if code := p.stop(t); code != 0 {
				t.Errorf("%s exited with %d on SIGTERM", c.name, code)
			}
			rows = append(rows, fmt.Sprintf("| %d | %s | %s | %s | %.0f µs |", run, c.name, seq, conc, cpu[c.name]*1e6))
		}
		if cpu["floor"] > 0 {
			rows[len(rows)-2] += fmt.Sprintf(" %.2f× |", cpu["service"]/cpu["floor"])
			rows[len(rows)-1] += " 1.00× |"
		}
	}
	table := fmt.Sprintf("load: %d sequential and %d concurrent (50 at a time) connects per callout, %d ServiceAccounts\n"+
		"| run | callout | sequential: connects/s, p50, p99 | concurrent: connects/s, p50, p99 | callout CPU per connect | vs floor |\n"+
		"|---|---|---|---|---|---|\n%s\n", connects, connects, accounts, strings.Join(rows, "\n"))
	t.Log("\n" + table)
	fmt.Print(table)
}

// phase is the outcome of one batch of connects.
type phase struct {
	rate     float64
	p50, p99 time.Duration
}

func (p phase) String() string {
	return fmt.Sprintf("%.0f/s, %s, %s", p.rate, p.p50.Round(10*time.Microsecond), p.p99.Round(10*time.Microsecond))
}

// loadConnects makes n connections, at most parallel at a time, each a fresh callout: connect,
// then close. Every one must succeed.
func loadConnects(t *testing.T, url string, tokens []string, n, parallel int) phase {
	t.Helper()
	lat := make([]time.Duration, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			t0 := time.Now()
			nc, err := nats.Connect(url, nats.Token(tokens[i%len(tokens)]), nats.NoReconnect(), nats.Timeout(5*time.Second))
			lat[i] = time.Since(t0)
			if err != nil {
				errs <- err
				return
			}
			nc.Close()
		})
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatalf("connect under load: %v", err)
	}
	slices.Sort(lat)
	return phase{rate: float64(n) / took.Seconds(), p50: lat[n/2], p99: lat[n*99/100]}
}

// procCPU is the user and system CPU time the process has used (/proc/PID/stat, in clock ticks
// of 10 ms, Linux's USER_HZ).
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("CPU time of %d: %v", pid, err)
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// envInt reads a positive integer setting of the suite, or def.
func envInt(t *testing.T, key string, def int) int {
	t.Helper()
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", key, v)
	}
	return n
}
