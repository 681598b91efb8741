//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	natsjwt "github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The operator-mode guide (docs/operator-mode.md), run as written: the commands are read from
// the guide itself, so the guide and this test cannot drift apart. Steps 1-5 run as bash
// scripts with the real nsc, nats-server, nats and kubectl; the service runs with exactly the
// settings of step 4's table, its Secret and ConfigMap read back from the API server and laid
// out the way the kubelet mounts them.
func TestOperatorGuide(t *testing.T) {
	t.Parallel()
	g := newGuideRun(t)
	doc := g.doc

	// 1. Accounts, keys and the callout. 2. NACK alongside.
	g.run(t, "step 1", doc.commands(t, 1))
	g.run(t, "step 2", doc.commands(t, 2))
	g.noteSeeds(t)
	// nsc kept everything in this run's home.
	for _, p := range []string{".local/share/nats/nsc/stores/OP", "nkeys/keys", "nsc/nsc.json"} {
		if _, err := os.Stat(filepath.Join(g.home, p)); err != nil {
			t.Errorf("nsc's files are not where this run put them: %v", err)
		}
	}

	// 3. nats-server: the block up to "start nats-server", then the server, then the rest.
	configure, push := splitAt(t, doc.commands(t, 3), "# start nats-server -c nats.conf")
	g.run(t, "step 3 (configuration)", configure)
	url := g.startNATS(t)
	g.run(t, "step 3 (nsc push)", push)

	// 4. The sidecar's Secret and ConfigMap in the real API server, mounted, and the service.
	newNamespace(t, "nats")
	for _, o := range []struct{ kind, name string }{{"secret", guideSecret}, {"configmap", guideConfigMap}} {
		deleteGuideObject(t, o.kind, o.name) // left over from an earlier run against this cluster
		t.Cleanup(func() { deleteGuideObject(t, o.kind, o.name) })
	}
	g.run(t, "step 4", doc.commands(t, 4))
	g.mountFromAPI(t)
	settings := g.settings(t)
	appPub := settings["NATS_ACCOUNT"]
	svc := g.startService(t, url, settings)
	// wantRefused and friends take a deployment: this one is the guide's server and sidecar.
	d := &deployment{dir: g.base, nats: &natsServer{name: "nats-server", dir: g.dir, port: g.port, p: g.nats}, svc: svc}

	// A workload: the README's example ServiceAccount (README.md, "## Permissions").
	ns := newNamespace(t, "shop")
	newServiceAccount(t, ns, "orders", map[string]string{
		"nats.io/allowed-pub-subjects": "events.orders.>, audit.shop",
		"nats.io/allowed-sub-subjects": "commands.orders.*",
		"nats.io/denied-pub-subjects":  "shop.internal.>",
	})
	tok := kubectlToken(t, ns, "orders", "nats")
	tokenFile := filepath.Join(g.base, "token")
	writeFile(t, tokenFile, []byte(tok))
	connectWhenKnown(t, url, tok).Close()

	// The witness is a static user of APP, signed with APP's signing key (what
	// `nsc add user --account APP -K <seed>` makes): it sees exactly what is published in APP,
	// since nothing crosses an account boundary without an export. A message from a token
	// client reaching it shows that the client was placed in APP.
	appKeyFile := filepath.Join(g.dir, "secrets", "app-signing.nk")
	witness := g.appObserver(t, url, appPub, appKeyFile)
	allowed := func() float64 { return svc.requests(t, "result", "allowed") }

	t.Run("step 6: a pod logs in with only its token", func(t *testing.T) {
		before := allowed()
		// The guide's command, with this run's server and token file.
		cmd := doc.span(t, 6, "nats --server ")
		cmd = strings.Replace(cmd, fmt.Sprintf("nats://nats.nats:%d", g.port), url, 1)
		cmd = strings.Replace(cmd, "/var/run/secrets/nats/token", tokenFile, 1)
		if !strings.Contains(cmd, url) || !strings.Contains(cmd, tokenFile) {
			t.Fatalf("step 6's command no longer has the server and token file this test fills in: %s", cmd)
		}
		g.run(t, "step 6", cmd)
		if m := witness.next(t, "shop.orders"); string(m.Data) != "hi" {
			t.Errorf("APP received %q on shop.orders, want \"hi\"", m.Data)
		}
		if got := allowed(); got != before+1 {
			t.Errorf("allowed callouts went from %g to %g, want one more", before, got)
		}

		// The ServiceAccount's own grants, and nothing else.
		r := natsCLI(t, "--server", url, "--token", tok, "pub", "events.orders.created", `{"id":1}`)
		if r.exit != 0 {
			t.Errorf("pub events.orders.created: exit %d\n%s", r.exit, r.output)
		} else if m := witness.next(t, "events.orders.created"); string(m.Data) != `{"id":1}` {
			t.Errorf("APP received %q on events.orders.created", m.Data)
		}
		r = natsCLI(t, "--server", url, "--token", tok, "pub", "other.x", "x")
		if r.exit == 0 || !strings.Contains(r.output, "Permissions Violation") {
			t.Errorf("pub other.x: exit %d, want a permissions violation\n%s", r.exit, r.output)
		}
		err := tryPublish(t, url, tok, "shop.internal.x", "nope", func(nc *nats.Conn) {
			if err := nc.Publish("shop.sentinel.1", nil); err != nil {
				t.Fatal(err)
			}
		})
		wantViolation(t, err, "publish", "shop.internal.x")
		witness.notBefore(t, "shop.internal.x", "shop.sentinel.1")
	})

	t.Run("bad tokens are refused", func(t *testing.T) {
		// No token at all: the default sentinel takes the client to the callout, which refuses.
		wantRefused(t, d, "no_token")
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		sa, err := suite.kube.CoreV1().ServiceAccounts(ns).Get(context.Background(), "orders", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantRefused(t, d, "bad_signature", nats.Token(forge(t, realisticClaims(sa, time.Hour), key)))
		r := natsCLI(t, "--server", url, "--token", "not-a-token", "pub", "shop.x", "x")
		if r.exit == 0 || !strings.Contains(r.output, "Authorization Violation") {
			t.Errorf("pub with a bad token: exit %d, want an authorization violation\n%s", r.exit, r.output)
		}
	})

	t.Run("live revocation: a deleted ServiceAccount's connection is closed", func(t *testing.T) {
		eventually(t, 15*time.Second, "/readyz without a revocation warning", func() error {
			_, body, err := svc.get("/readyz")
			if err == nil && strings.Contains(body, "[!] revocation") {
				err = fmt.Errorf("%s", body)
			}
			return err
		})
		newServiceAccount(t, ns, "leaving", nil)
		ltok := kubectlToken(t, ns, "leaving", "nats")
		connectWhenKnown(t, url, ltok).Close()
		nc, err := dial(url, nats.Token(ltok))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if err := suite.kube.CoreV1().ServiceAccounts(ns).Delete(context.Background(), "leaving", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "the connection closed", func() error {
			if !nc.IsClosed() {
				return errors.New("still open")
			}
			return nil
		})
		if n := svc.metrics(t).sum("nats_callout_revocations_total", "reason", "serviceaccount_deleted"); n != 1 {
			t.Errorf("serviceaccount_deleted revocations = %v, want 1", n)
		}
	})

	t.Run("step 2: NACK and static users of APP never reach the callout", func(t *testing.T) {
		before := svc.requests(t)
		nackCreds := filepath.Join(g.dir, "secrets", "nack.creds")
		nack := func(args ...string) string {
			t.Helper()
			r := natsCLI(t, append([]string{"--server", url, "--creds", nackCreds}, args...)...)
			if r.exit != 0 {
				t.Fatalf("nats --creds secrets/nack.creds %s: exit %d\n%s", strings.Join(args, " "), r.exit, r.output)
			}
			return r.output
		}
		info := nack("account", "info")
		for _, want := range []string{"Account: NACK", "JetStream Account Information"} {
			if !strings.Contains(info, want) {
				t.Errorf("account info of nack.creds lacks %q:\n%s", want, info)
			}
		}
		nack("stream", "add", "NACK_ORDERS", "--subjects", "nack.orders.>", "--defaults")
		if out := nack("pub", "--jetstream", "nack.orders.1", "x"); !strings.Contains(out, "Stored in Stream: NACK_ORDERS") {
			t.Errorf("JetStream publish not stored:\n%s", out)
		}

		nc, err := dial(url, nats.UserCredentials(nackCreds))
		if err != nil {
			t.Fatalf("connect with nack.creds: %v", err)
		}
		defer nc.Close()
		sub, err := nc.SubscribeSync("nack.events")
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish("nack.events", []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "ping" {
			t.Errorf("nack.creds round trip: %v %v", m, err)
		}

		app, err := dial(url, g.appUser(t, appPub, appKeyFile))
		if err != nil {
			t.Fatalf("a static user of APP: %v", err)
		}
		if err := flushErr(app); err != nil {
			t.Errorf("a static user of APP: %v", err)
		}
		app.Close()

		if got := svc.requests(t); got != before {
			t.Errorf("callout requests went from %g to %g: a static login reached the callout; %s", before, got, svc.metrics(t).requestsString())
		}
	})

	t.Run("step 3: sentinel credentials along with the token", func(t *testing.T) {
		before := allowed()
		g.run(t, "step 3 (sentinel.creds)", doc.span(t, 3, "nsc generate creds --account AUTH --name sentinel"))
		g.noteSeeds(t)
		cmd := doc.span(t, 3, "nats --creds sentinel.creds --token")
		if !strings.HasSuffix(cmd, " ...") {
			t.Fatalf("step 3's sentinel command no longer ends in \"...\", which this test fills in: %s", cmd)
		}
		cmd = strings.TrimSuffix(cmd, "...") + "--server " + url + " pub shop.orders.sentinel hi"
		g.run(t, "step 3 (sentinel credentials and token)", cmd, "TOKEN="+tok)
		if m := witness.next(t, "shop.orders.sentinel"); string(m.Data) != "hi" {
			t.Errorf("APP received %q, want \"hi\"", m.Data)
		}
		if got := allowed(); got != before+1 {
			t.Errorf("allowed callouts went from %g to %g, want one more", before, got)
		}
	})

	t.Run("step 5: rotating APP's signing key", func(t *testing.T) {
		add, retire := splitAt(t, doc.commands(t, 5), "# then update app-signing.nk in the Secret")

		preRotationJWT, err := os.ReadFile(filepath.Join(g.dir, "public", "app.jwt"))
		if err != nil {
			t.Fatal(err)
		}
		g.run(t, "step 5 (new key added and pushed)", add)
		g.noteSeeds(t)
		oldKeyFile := filepath.Join(g.dir, "old-app-signing.nk")
		beforeKey, beforeJWT := reloads(t, svc, "target_signing_key"), reloads(t, svc, "target_account_jwt")
		g.updateObjects(t)
		waitReload(t, svc, "target_account_jwt", beforeJWT)
		waitReload(t, svc, "target_signing_key", beforeKey)
		wantSetupOK(t, svc, true)
		// APP has both keys now; the service signs with the new one.
		publishVia(t, url, tok, "shop.rotation.1")
		if m := witness.next(t, "shop.rotation.1"); string(m.Data) != "rotated" {
			t.Errorf("APP received %q", m.Data)
		}

		g.run(t, "step 5 (old key retired)", retire)
		beforeJWT = reloads(t, svc, "target_account_jwt")
		g.updateObjects(t)
		waitReload(t, svc, "target_account_jwt", beforeJWT)
		wantSetupOK(t, svc, true)
		// The old key is APP's no longer: users it signs are refused.
		if nc, err := dial(url, g.appUser(t, appPub, oldKeyFile)); err == nil {
			nc.Close()
			t.Error("a user signed with the retired key still logs in; the step proves nothing")
		}
		// A new client is signed with the new key and lands in APP.
		newWitness := g.appObserver(t, url, appPub, appKeyFile)
		publishVia(t, url, tok, "shop.rotation.2")
		if m := newWitness.next(t, "shop.rotation.2"); string(m.Data) != "rotated" {
			t.Errorf("APP received %q", m.Data)
		}

		// A ConfigMap that does not list the sidecar's key (here: APP's JWT from before the
		// rotation) is reported, not obeyed: the sidecar keeps signing, /readyz and the
		// metric say the files disagree, and agreeing files clear it.
		rotatedJWT, err := os.ReadFile(filepath.Join(g.dir, "public", "app.jwt"))
		if err != nil {
			t.Fatal(err)
		}
		calloutJWT, err := os.ReadFile(filepath.Join(g.dir, "public", "auth.jwt"))
		if err != nil {
			t.Fatal(err)
		}
		beforeJWT = reloads(t, svc, "target_account_jwt")
		g.accts.update(t, map[string][]byte{"auth.jwt": calloutJWT, "app.jwt": preRotationJWT})
		waitReload(t, svc, "target_account_jwt", beforeJWT)
		wantSetupOK(t, svc, false)
		beforeJWT = reloads(t, svc, "target_account_jwt")
		g.accts.update(t, map[string][]byte{"auth.jwt": calloutJWT, "app.jwt": rotatedJWT})
		waitReload(t, svc, "target_account_jwt", beforeJWT)
		wantSetupOK(t, svc, true)

		// Restarted (as after a ConfigMap change), the service's start-up checks accept the
		// rotated files.
		svc.stop(t)
		svc.restart(t)
		publishVia(t, url, tok, "shop.rotation.3")
		newWitness.next(t, "shop.rotation.3")
	})
}

// wantSetupOK waits until the service reports its operator-mode files as agreeing (ok) or not,
// in nats_callout_operator_setup_ok and on /readyz (a warning line that keeps it ready).
func wantSetupOK(t *testing.T, svc *calloutService, ok bool) {
	t.Helper()
	want := map[bool]float64{true: 1, false: 0}[ok]
	eventually(t, 20*time.Second, fmt.Sprintf("operator setup ok = %v", ok), func() error {
		if got := svc.metrics(t).sum("nats_callout_operator_setup_ok"); got != want {
			return fmt.Errorf("nats_callout_operator_setup_ok = %g", got)
		}
		code, body, err := svc.get("/readyz")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("/readyz answered %d: %s", code, body)
		}
		if warned := strings.Contains(body, "[!] operator_setup: "); warned == ok {
			return fmt.Errorf("/readyz: %s", body)
		}
		if !ok && !strings.Contains(body, "NATS_TARGET_SIGNING_KEY_FILE") {
			return fmt.Errorf("/readyz does not name the file that disagrees: %s", body)
		}
		return nil
	})
}

// publishVia connects with tok, publishes "rotated" to subject and checks that the server
// accepted it.
func publishVia(t *testing.T, url, tok, subject string) {
	t.Helper()
	nc := connect(t, url, tok)
	defer nc.Close()
	if err := nc.Publish(subject, []byte("rotated")); err != nil {
		t.Fatal(err)
	}
	if err := flushErr(nc); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
}

const (
	// guideFile is the operator-mode guide, relative to the repository root.
	guideFile      = "docs/operator-mode.md"
	guideTitle     = "# Operator mode (JWT accounts, nsc)"
	guideSecret    = "nats-callout-keys"     // step 4's Secret
	guideConfigMap = "nats-callout-accounts" // step 4's ConfigMap
)

// guideDoc is the operator-mode guide by step: the text under each "### N." heading, up to the
// next heading.
type guideDoc struct {
	steps map[int]string
}

var (
	stepHeadingRE = regexp.MustCompile(`^### (\d+)\. `)
	codeSpanRE    = regexp.MustCompile("`([^`]+)`")
)

// readGuide reads the operator-mode guide, guideFile. The guide's nats-server port 4222
// is replaced by port everywhere in it (plain string substitution), so that the run takes a
// free port and never collides with anything else on the machine.
func readGuide(t *testing.T, port int) guideDoc {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", filepath.FromSlash(guideFile)))
	if err != nil {
		t.Fatal(err)
	}
	if first, _, _ := strings.Cut(string(raw), "\n"); first != guideTitle {
		t.Fatalf("%s: first line %q, want %q", guideFile, first, guideTitle)
	}
	text := strings.ReplaceAll(string(raw), "4222", strconv.Itoa(port))
	steps := map[int]*strings.Builder{}
	inFence, step := false, 0
	for _, line := range strings.Split(text, "\n") {
		fence := strings.HasPrefix(strings.TrimSpace(line), "```")
		if !inFence && !fence && strings.HasPrefix(line, "#") {
			// Any heading ends a step; "### N. ..." starts one.
			step = 0
			if m := stepHeadingRE.FindStringSubmatch(line); m != nil {
				step, _ = strconv.Atoi(m[1])
				steps[step] = &strings.Builder{}
			}
			continue
		}
		if fence {
			inFence = !inFence
		}
		if step > 0 {
			steps[step].WriteString(line + "\n")
		}
	}
	doc := guideDoc{steps: map[int]string{}}
	for n, b := range steps {
		doc.steps[n] = b.String()
	}
	for n := 1; n <= 6; n++ {
		if doc.steps[n] == "" {
			t.Fatalf("%s: no \"### %d.\" step", guideFile, n)
		}
	}
	return doc
}

// commands returns the ```sh blocks of step n.
func (d guideDoc) commands(t *testing.T, n int) string {
	t.Helper()
	var blocks []string
	var cur *strings.Builder
	for _, line := range strings.Split(d.steps[n], "\n") {
		switch trimmed := strings.TrimSpace(line); {
		case cur == nil && trimmed == "```sh":
			cur = &strings.Builder{}
		case cur != nil && trimmed == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	if len(blocks) == 0 {
		t.Fatalf("%s: step %d has no ```sh block", guideFile, n)
	}
	return strings.Join(blocks, "\n")
}

// prose returns step n without its fenced blocks.
func (d guideDoc) prose(n int) string {
	var b strings.Builder
	inFence := false
	for _, line := range strings.Split(d.steps[n], "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if !inFence {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// span returns the first inline code span of step n's prose that starts with prefix.
func (d guideDoc) span(t *testing.T, n int, prefix string) string {
	t.Helper()
	for _, m := range codeSpanRE.FindAllStringSubmatch(d.prose(n), -1) {
		s := strings.Join(strings.Fields(m[1]), " ")
		if strings.HasPrefix(s, prefix) {
			return s
		}
	}
	t.Fatalf("%s: step %d has no `%s...` in its text", guideFile, n, prefix)
	return ""
}

// table returns step n's table rows: the first code span of the first column, mapped to the
// first code span of the second.
func (d guideDoc) table(t *testing.T, n int) map[string]string {
	t.Helper()
	rows := map[string]string{}
	for _, line := range strings.Split(d.prose(n), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(line, "|") {
			continue
		}
		k, v := codeSpanRE.FindStringSubmatch(cells[1]), codeSpanRE.FindStringSubmatch(cells[2])
		if k == nil || v == nil {
			continue
		}
		rows[k[1]] = v[1]
	}
	return rows
}

// splitAt splits a block of commands before the line that starts with marker.
func splitAt(t *testing.T, block, marker string) (string, string) {
	t.Helper()
	lines := strings.Split(block, "\n")
	for i, line := range lines {
		if strings.HasPrefix(strings.TrimSpace(line), marker) {
			return strings.Join(lines[:i], "\n") + "\n", strings.Join(lines[i:], "\n")
		}
	}
	t.Fatalf("%s: no line %q in the block:\n%s", guideFile, marker, block)
	return "", ""
}

// guideRun is one run of the guide: a working directory as a user's would be, an nsc
// environment of its own, and what the guide starts.
type guideRun struct {
	doc   guideDoc
	base  string // the test's directory
	dir   string // where the guide's commands run
	home  string // HOME, nsc's config, data and key stores
	port  int    // nats-server's client port, in place of 4222
	env   []string
	log   string // every command's output
	nats  *proc
	mount string // the root the Secret and ConfigMap volumes are mounted under
	keys  *secretVolume
	accts *secretVolume
}

func newGuideRun(t *testing.T) *guideRun {
	t.Helper()
	bin := os.Getenv("E2E_BIN")
	for _, tool := range []string{"nsc", "nats-server", "nats", "kubectl"} {
		fi, err := os.Stat(filepath.Join(bin, tool))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			t.Fatalf("the guide needs %s in E2E_BIN (%s): scripts/build-tools.sh builds it", tool, bin)
		}
	}
	g := &guideRun{base: testDir(t), port: freePort(t)}
	g.dir, g.home = filepath.Join(g.base, "guide"), filepath.Join(g.base, "home")
	g.mount, g.log = filepath.Join(g.base, "mnt"), filepath.Join(g.base, "guide.log")
	for _, d := range []string{g.dir, g.home, g.mount} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	g.env = []string{
		"PATH=" + bin + ":/usr/bin:/bin",
		"HOME=" + g.home,
		"XDG_CONFIG_HOME=" + filepath.Join(g.home, ".config"),
		"XDG_DATA_HOME=" + filepath.Join(g.home, ".local", "share"), // nsc's stores
		"NSC_HOME=" + filepath.Join(g.home, "nsc"),                  // nsc's configuration
		"NKEYS_PATH=" + filepath.Join(g.home, "nkeys"),              // nsc's key store
		"KUBECONFIG=" + suite.kubeconfig,
	}
	g.doc = readGuide(t, g.port)
	return g
}

// run runs commands with bash -euo pipefail in the guide's directory and fails the test if
// any fails. The scripts hold no secrets (tokens come in env); their output goes to guide.log.
func (g *guideRun) run(t *testing.T, what, script string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = g.dir
	cmd.Env = append(append([]string(nil), g.env...), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start).Round(time.Millisecond)
	if f, ferr := os.OpenFile(g.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); ferr == nil {
		fmt.Fprintf(f, "===== %s (%s, %v)\n%s\n----- output\n%s\n", what, took, err, script, out.String())
		f.Close()
	}
	if err != nil {
		t.Fatalf("%s failed (%v) after %s:\n%s\n--- output:\n%s", what, err, took, script, out.String())
	}
	t.Logf("%s: %s", what, took)
	return out.String()
}

// noteSeeds registers every nkey seed the guide has written (its secrets/ files, nsc's key
// store) with the log check.
func (g *guideRun) noteSeeds(t *testing.T) {
	t.Helper()
	for _, root := range []string{g.dir, g.home} {
		err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
			if err != nil || !e.Type().IsRegular() {
				return err
			}
			if info, err := e.Info(); err != nil || info.Size() > 1<<20 {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, seed := range seedRE.FindAllString(string(data), -1) {
				suite.noteSecret(seed, "nkey seed written by the operator guide ("+filepath.Base(path)+")")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// startNATS starts `nats-server -c nats.conf` in the guide's directory, as step 3 says, and
// waits until it accepts client connections.
func (g *guideRun) startNATS(t *testing.T) string {
	t.Helper()
	g.nats = startProc(t, g.dir, "nats-server", suite.natsServer, []string{"-c", "nats.conf"}, []string{"PATH=/usr/bin:/bin"})
	addr := fmt.Sprintf("127.0.0.1:%d", g.port)
	eventually(t, 20*time.Second, "nats-server accepts connections", func() error {
		if !g.nats.running() {
			t.Fatalf("nats-server exited:\n%s", g.nats.tail(20))
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if !strings.HasPrefix(line, "INFO ") {
			return fmt.Errorf("nats-server greeted with %.20q", line)
		}
		return nil
	})
	return "nats://" + addr
}

func deleteGuideObject(t *testing.T, kind, name string) {
	t.Helper()
	var err error
	switch kind {
	case "secret":
		err = suite.kube.CoreV1().Secrets("nats").Delete(context.Background(), name, metav1.DeleteOptions{})
	case "configmap":
		err = suite.kube.CoreV1().ConfigMaps("nats").Delete(context.Background(), name, metav1.DeleteOptions{})
	}
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete %s nats/%s: %v", kind, name, err)
	}
}

// mountFromAPI reads step 4's ConfigMap and Secret back from the API server and lays them out
// the way the kubelet mounts them, or updates the mounts the way the kubelet does (an atomic
// ..data swap): the ConfigMap first, as step 5 asks.
func (g *guideRun) mountFromAPI(t *testing.T) {
	t.Helper()
	var cm struct {
		Data       map[string]string `json:"data"`
		BinaryData map[string]string `json:"binaryData"`
	}
	if err := json.Unmarshal([]byte(kubectl(t, "-n", "nats", "get", "configmap", guideConfigMap, "-o", "json")), &cm); err != nil {
		t.Fatalf("configmap %s: %v", guideConfigMap, err)
	}
	accts := map[string][]byte{}
	for k, v := range cm.Data {
		accts[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		accts[k] = decodeB64(t, "configmap "+guideConfigMap+" "+k, v)
	}
	var sec struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal([]byte(kubectl(t, "-n", "nats", "get", "secret", guideSecret, "-o", "json")), &sec); err != nil {
		t.Fatalf("secret %s: %v", guideSecret, err)
	}
	keys := map[string][]byte{}
	for k, v := range sec.Data {
		keys[k] = decodeB64(t, "secret "+guideSecret+" "+k, v)
	}
	// The mount points are the directories of step 4's table's paths.
	if g.accts == nil {
		g.accts = newSecretVolume(t, filepath.Join(g.mount, "etc", "nats-callout-accounts"), accts)
		g.keys = newSecretVolume(t, filepath.Join(g.mount, "etc", "nats-callout"), keys)
		return
	}
	g.accts.update(t, accts)
	g.keys.update(t, keys)
}

func decodeB64(t *testing.T, what, v string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return b
}

// updateObjects updates the Secret and the ConfigMap from the files as they are now, with
// step 4's own kubectl commands (`kubectl create ... --dry-run=client -o yaml | kubectl replace
// -f -`), and the mounts after them.
func (g *guideRun) updateObjects(t *testing.T) {
	t.Helper()
	joined := strings.ReplaceAll(g.doc.commands(t, 4), "\\\n", " ")
	var cmds []string
	for _, line := range strings.Split(joined, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "kubectl ") && strings.Contains(line, " create ") {
			cmds = append(cmds, line+" --dry-run=client -o yaml | kubectl replace -f -")
		}
	}
	if len(cmds) != 2 {
		t.Fatalf("step 4: want its two `kubectl ... create` commands, found %d", len(cmds))
	}
	g.run(t, "update the Secret and the ConfigMap", strings.Join(cmds, "\n"))
	g.mountFromAPI(t)
}

// requiredSettings are what step 4's table must set.
var requiredSettings = []string{
	"NATS_ACCOUNT", "NATS_MODE", "NATS_CREDS_FILE", "NATS_SIGNING_KEY_FILE",
	"NATS_TARGET_SIGNING_KEY_FILE", "NATS_XKEY_FILE", "NATS_CALLOUT_ACCOUNT_JWT_FILE",
	"NATS_TARGET_ACCOUNT_JWT_FILE", "NATS_SYSTEM_CREDS_FILE",
}

// settings resolves step 4's table: a path names a file under the mounts, an nsc command is
// run (its output taken without its quotes, as the table says), anything else is the value
// itself.
func (g *guideRun) settings(t *testing.T) map[string]string {
	t.Helper()
	rows := g.doc.table(t, 4)
	out := map[string]string{}
	for k, v := range rows {
		switch {
		case strings.HasPrefix(v, "/"):
			path := filepath.Join(g.mount, v)
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("step 4: %s=%s is not in the mounted Secret or ConfigMap: %v", k, v, err)
			}
			out[k] = path
		case strings.HasPrefix(v, "nsc "):
			out[k] = strings.Trim(strings.TrimSpace(g.run(t, "step 4: "+k, v)), `"`)
		default:
			out[k] = v
		}
	}
	for _, k := range requiredSettings {
		if _, ok := out[k]; !ok {
			t.Fatalf("step 4's table does not set %s (it sets %v)", k, rows)
		}
	}
	if !nkeys.IsValidPublicAccountKey(out["NATS_ACCOUNT"]) {
		t.Fatalf("step 4: NATS_ACCOUNT from %q is %q, not an account public key", rows["NATS_ACCOUNT"], out["NATS_ACCOUNT"])
	}
	return out
}

// startService starts the service with the settings of step 4's table and the suite's
// Kubernetes settings (its own ServiceAccount's kubeconfig, the API server's issuer).
func (g *guideRun) startService(t *testing.T, natsURL string, settings map[string]string) *calloutService {
	t.Helper()
	s := &calloutService{name: "callout", dir: g.base, httpAddr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	s.env = []string{
		"PATH=/usr/bin:/bin",
		"HOME=" + g.base,
		"NATS_URL=" + natsURL,
		"K8S_IN_CLUSTER=false",
		"KUBECONFIG=" + suite.serviceKubeconfig,
		"JWT_ISSUER=" + suite.issuer,
		"JWT_AUDIENCE=nats",
		"HTTP_ADDR=" + s.httpAddr,
		"LOG_LEVEL=debug",
	}
	names := make([]string, 0, len(settings))
	for k := range settings {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		s.env = append(s.env, k+"="+settings[k])
	}
	// Registered before the process, so it runs after the process has stopped.
	t.Cleanup(func() { checkLogHoldsNoSecrets(t, s.p) })
	s.start(t)
	return s
}

// appUser is the login of a static user of APP signed with the signing key in keyFile (seed
// on its first line).
func (g *guideRun) appUser(t *testing.T, appPub, keyFile string) nats.Option {
	t.Helper()
	data, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := nkeys.FromSeed([]byte(strings.TrimSpace(strings.SplitN(string(data), "\n", 2)[0])))
	if err != nil {
		t.Fatalf("%s: %v", keyFile, err)
	}
	user := newUserKey(t)
	claims := natsjwt.NewUserClaims(pubOf(t, user))
	claims.Name = "app-witness"
	claims.IssuerAccount = appPub
	userJWT, err := claims.Encode(signer)
	if err != nil {
		t.Fatal(err)
	}
	suite.noteSecret(userJWT, "static APP user JWT")
	return nats.UserJWTAndSeed(userJWT, string(seedOf(t, user)))
}

// appObserver is a static user of APP subscribed to everything in APP.
func (g *guideRun) appObserver(t *testing.T, url, appPub, keyFile string) *observer {
	t.Helper()
	o := &observer{ch: make(chan *nats.Msg, 4096)}
	nc, err := dial(url, g.appUser(t, appPub, keyFile), nats.Name("app-witness"))
	if err != nil {
		t.Fatalf("a static user of APP: %v", err)
	}
	t.Cleanup(nc.Close)
	o.nc = nc
	if _, err := nc.ChanSubscribe(">", o.ch); err != nil {
		t.Fatal(err)
	}
	if err := flushErr(nc); err != nil {
		t.Fatal(err)
	}
	return o
}
