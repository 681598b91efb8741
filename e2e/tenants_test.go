//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// annotationLimit is Kubernetes' limit on all of one object's annotations, keys and values.
const annotationLimit = 256 << 10

// Scenario: one tenant's ServiceAccounts carry annotations at Kubernetes' 256 KiB limit, stored
// by the real API server, and log in as fast as their clients can; another namespace's
// workload logs in all the while, and none of its logins waits out the server's
// authorization timeout.
func TestHugeAnnotations(t *testing.T) {
	d := newDeployment(t, deployOpts{})
	url := d.nats.url()
	hoard := newNamespace(t, "hoard")

	// list is 1,000 distinct subjects prefix.kind.<x bytes of padding>.NNNN.
	list := func(prefix, kind string, x int) string {
		e := make([]string, 1000)
		for i := range e {
			e[i] = fmt.Sprintf("%s.%s.%s.%04d", prefix, kind, strings.Repeat("x", x), i)
		}
		return strings.Join(e, ",")
	}
	short := func(kind string) string {
		e := make([]string, 1000)
		for i := range e {
			e[i] = fmt.Sprintf("%s.%04d", kind, i) // 7 bytes
		}
		return strings.Join(e, ",")
	}
	// The most an allowed login can be made to carry: all four lists at the default entry cap
	// (1,000), the deny lists within the default ANNOTATION_MAX_BYTES (16 KiB: 14,000 bytes
	// of deny subjects), the allow lists of long subjects filling the rest of the 256 KiB, of
	// which only what the byte cap leaves is granted (outside the namespace's default grant, so
	// that what is cut shows).
	caps := map[string]string{
		"nats.io/allowed-pub-subjects": "np.>," + list("wide", "pub", 90), "nats.io/allowed-sub-subjects": list("wide", "sub", 90),
		"nats.io/denied-pub-subjects": short("np"), "nats.io/denied-sub-subjects": short("ns"),
	}
	// All four lists at the entry cap with long subjects: the deny lists are beyond the byte
	// cap, so the login is refused.
	over := map[string]string{
		"nats.io/allowed-pub-subjects": list(hoard, "pub", 40), "nats.io/allowed-sub-subjects": list(hoard, "sub", 40),
		"nats.io/denied-pub-subjects": list(hoard, "nopub", 40), "nats.io/denied-sub-subjects": list(hoard, "nosub", 40),
	}
	// The hardening issue's shape: one allow list of short subjects filling 250 KiB (about
	// 35,000 of them), of which the first 1,000 are used.
	var flood strings.Builder
	for i := 0; flood.Len() < 250<<10; i++ {
		fmt.Fprintf(&flood, "flood.%d,", i)
	}
	cut := map[string]string{"nats.io/allowed-pub-subjects": flood.String()}
	for _, sa := range []struct {
		name string
		a    map[string]string
	}{{"over", over}, {"caps", caps}, {"cut", cut}} {
		size := 0
		for k, v := range sa.a {
			size += len(k) + len(v)
		}
		if size > annotationLimit || size < 200<<10 {
			t.Fatalf("%s: %d bytes of annotations, want 200 KiB to %d", sa.name, size, annotationLimit)
		}
		t.Logf("ServiceAccount %s/%s: %d bytes of annotations", hoard, sa.name, size)
		newServiceAccount(t, hoard, sa.name, sa.a)
	}
	calm := newNamespace(t, "calm")
	newServiceAccount(t, calm, "app", nil)
	fullTok, cutTok, appTok := token(t, hoard, "caps"), token(t, hoard, "cut"), token(t, calm, "app")
	for _, tok := range []string{fullTok, cutTok, appTok} {
		connectWhenKnown(t, url, tok).Close()
	}

	t.Run("deny lists beyond the byte cap refuse the login", func(t *testing.T) {
		// The informer delivers a namespace's ServiceAccounts in order: "over" came before "caps".
		wantRefused(t, d, "invalid_policy", nats.Token(token(t, hoard, "over")))
	})

	t.Run("the grant is what the capped lists say", func(t *testing.T) {
		// 16,384 bytes: 14,000 of deny subjects, 4 of np.>, then whole allow subjects of 104 bytes.
		kept := (16384 - 14000 - 4) / 104
		pub := func(i int) string { return fmt.Sprintf("wide.pub.%s.%04d", strings.Repeat("x", 90), i) }
		if err := tryPublish(t, url, fullTok, pub(kept-1), "x"); err != nil {
			t.Errorf("publish the last allow entry within the byte cap: %v", err)
		}
		wantViolation(t, tryPublish(t, url, fullTok, pub(kept), "x"), "publish", pub(kept))
		wantViolation(t, tryPublish(t, url, fullTok, "np.0999", "x"), "publish", "np.0999")
		if err := tryPublish(t, url, fullTok, "np.1000", "x"); err != nil {
			t.Errorf("publish np.1000, allowed by np.> and not denied: %v", err)
		}
		if err := tryPublish(t, url, cutTok, "flood.999", "x"); err != nil {
			t.Errorf("publish flood.999, the 1,000th allow entry: %v", err)
		}
		wantViolation(t, tryPublish(t, url, cutTok, "flood.1000", "x"), "publish", "flood.1000")
		for _, warning := range []string{
			"nats.io/allowed-pub-subjects: more than 1000 entries, only the first 1000 are used",
			"nats.io/allowed-pub-subjects: annotations grant more than 16384 bytes of subjects, entries from",
		} {
			eventually(t, 10*time.Second, "the cut in the decision log", func() error {
				if !strings.Contains(d.svc.p.log(), warning) {
					return fmt.Errorf("no %q", warning)
				}
				return nil
			})
		}
	})

	// logins connects as calm/app n times, one after the other, and describes how long they took.
	logins := func(t *testing.T, n int, while string) string {
		var took []time.Duration
		for i := range n {
			start := time.Now()
			nc, err := dial(url, nats.Token(appTok))
			if err != nil {
				t.Errorf("login %d of %s/app %s: %v", i, calm, while, err)
				continue
			}
			if err := nc.Publish(calm+".x", nil); err != nil {
				t.Errorf("publish: %v", err)
			} else if err := flushErr(nc); err != nil {
				t.Errorf("flush: %v", err)
			}
			nc.Close()
			took = append(took, time.Since(start))
		}
		if len(took) == 0 {
			return "none"
		}
		slices.Sort(took)
		return fmt.Sprintf("%d logins, connect+publish+flush p50 %s, p90 %s, max %s", len(took),
			took[len(took)/2].Round(time.Millisecond), took[len(took)*9/10].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
	}

	t.Run("hammered while another namespace logs in", func(t *testing.T) {
		t.Logf("%s/app alone: %s", calm, logins(t, 40, "alone"))
		before := d.svc.metrics(t)
		full, cut := startLoad(t, url, fullTok, hoard+".x", 8), startLoad(t, url, cutTok, hoard+".y", 8)
		full.waitSuccesses(t, 20)
		cut.waitSuccesses(t, 20)
		t.Logf("%s/app while 16 clients of %s log in over and over: %s (nats-server's authorization timeout: %s)",
			calm, hoard, logins(t, 40, "while "+hoard+" is hammered"), authTimeout)
		full.finish(t)
		cut.finish(t)
		after := d.svc.metrics(t)
		allowed := after.sum("nats_callout_requests_total", "result", "allowed") - before.sum("nats_callout_requests_total", "result", "allowed")
		seconds := after.sum("nats_callout_request_duration_seconds_sum") - before.sum("nats_callout_request_duration_seconds_sum")
		count := after.sum("nats_callout_request_duration_seconds_count") - before.sum("nats_callout_request_duration_seconds_count")
		if count > 0 {
			t.Logf("callouts meanwhile: %g allowed, mean decision time %.2f ms", allowed, 1000*seconds/count)
		}
		if dropped := after.sum("nats_callout_requests_total", "result", "dropped") - before.sum("nats_callout_requests_total", "result", "dropped"); dropped > 0 {
			t.Errorf("%g requests dropped while hammered: %s", dropped, after.requestsString())
		}
	})
}

// Scenario: a deny entry that reads like a plain subject but carries a zero-width joiner
// refuses the login instead of denying nothing; the same character in an allow entry drops
// that entry with a warning.
func TestInvisibleCharacters(t *testing.T) {
	d := newDeployment(t, deployOpts{})
	url := d.nats.url()
	ns := newNamespace(t, "zw")
	newServiceAccount(t, ns, "deny", map[string]string{
		"nats.io/denied-pub-subjects": ns + ".secret\u200d.>",
	})
	newServiceAccount(t, ns, "allow", map[string]string{
		"nats.io/allowed-pub-subjects": "shared\u200d.x, shared.y",
	})
	denyTok, allowTok := token(t, ns, "deny"), token(t, ns, "allow")
	// The informer delivers a namespace's ServiceAccounts in order: once "allow" logs in, the
	// cache holds "deny" too.
	connectWhenKnown(t, url, allowTok).Close()
	wantRefused(t, d, "invalid_policy", nats.Token(denyTok))
	eventually(t, 10*time.Second, "the refusal in the decision log", func() error {
		if want := `invisible character U+200D`; !strings.Contains(d.svc.p.log(), want) {
			return fmt.Errorf("no %q", want)
		}
		return nil
	})

	if err := tryPublish(t, url, allowTok, "shared.y", "x"); err != nil {
		t.Errorf("publish shared.y: %v", err)
	}
	// nats-server names the subject with the character raw, so only the kind of error is checked.
	if err := tryPublish(t, url, allowTok, "shared\u200d.x", "x"); !errors.Is(err, nats.ErrPermissionViolation) {
		t.Errorf("publish to the dropped entry: %v, want a permissions violation", err)
	}
	const warning = `nats.io/allowed-pub-subjects: dropped \"shared\\u200d.x\": invisible character U+200D`
	eventually(t, 10*time.Second, "the dropped entry in the decision log", func() error {
		if !strings.Contains(d.svc.p.log(), warning) {
			return fmt.Errorf("no %s", warning)
		}
		return nil
	})
}
