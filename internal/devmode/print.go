package devmode

import (
	"fmt"
	"io"
	"strings"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// scenario is what dev mode prints and checks.
type scenario struct {
	url, http, conf, manifest, kubeconfig, namespaces string
	encrypted                                         bool
	tokens                                            *tokenFiles
	plan                                              demo
	planErr                                           error
	// demo holds the PASS/FAIL lines of the quick check run at start, printed with the rest.
	demo string
}

func (sc scenario) tokenFile(a account) string { return sc.tokens.path(a.Namespace, a.Name) }

// print writes the ready-to-paste instructions.
func (sc scenario) print(w io.Writer) {
	enc := "plain callouts (--xkey=false)"
	if sc.encrypted {
		enc = "encrypted callouts (xkey)"
	}
	fmt.Fprintf(w, "\nnats-k8s-oidc-callout dev: nats-server with auth callout, answered by this service.\n\n")
	fmt.Fprintf(w, "  NATS URL       %s\n", sc.url)
	fmt.Fprintf(w, "  HTTP           %s/readyz  %[1]s/metrics\n", sc.http)
	fmt.Fprintf(w, "  server config  %s  (%s)\n", sc.conf, enc)
	if sc.kubeconfig != "" {
		fmt.Fprintf(w, "  cluster        %s, namespaces %s: ServiceAccounts come from the cluster,\n"+
			"                 tokens from the local issuer (with their real uids); annotations changed with\n"+
			"                 kubectl apply to the next connection; restart to get tokens for new ServiceAccounts\n", sc.kubeconfig, sc.namespaces)
	} else {
		fmt.Fprintf(w, "  manifest       %s  (edit it: the next connection gets the new permissions)\n", sc.manifest)
	}
	fmt.Fprintf(w, "\nServiceAccount tokens (audience %q, re-minted before they expire):\n", audience)
	for _, sa := range sc.tokens.current() {
		fmt.Fprintf(w, "  %-28s %s\n", sa.Namespace+"/"+sa.Name, sc.tokens.path(sa.Namespace, sa.Name))
	}
	if sc.planErr != nil {
		fmt.Fprintf(w, "\nNo demo commands: %v.\nConnect with any token above: nats -s %s --token \"$(cat FILE)\" pub SUBJECT hello\n", sc.planErr, sc.url)
		return
	}
	sc.printCLI(w)
	sc.printGo(w)
	if sc.demo != "" {
		fmt.Fprintf(w, "\nJust now, with nats.go (make check runs the whole self-test):\n\n")
		for line := range strings.Lines(sc.demo) {
			fmt.Fprintf(w, "  %s", line)
		}
	}
	fmt.Fprintf(w, "\nDecisions are logged to stderr. Ctrl-C stops.\n\n")
}

// printCLI writes the plan as NATS CLI commands.
func (sc scenario) printCLI(w io.Writer) {
	p := sc.plan
	pubTok := fmt.Sprintf(`--token "$(cat %s)"`, shellQuote(sc.tokenFile(p.Publisher)))
	respTok := fmt.Sprintf(`--token "$(cat %s)"`, shellQuote(sc.tokenFile(p.Responder)))
	inbox := kube.InboxPrefix(p.Publisher.Namespace, p.Publisher.Name)
	fmt.Fprintf(w, "\nTry it with the NATS CLI (go install github.com/nats-io/natscli/nats@v0.5.0):\n\n")
	fmt.Fprintf(w, "  # allowed: %s may publish %s\n", p.Publisher, p.Subject)
	fmt.Fprintf(w, "  nats -s %s %s pub %s hello\n\n", sc.url, pubTok, p.Subject)
	if p.Refused != "" {
		fmt.Fprintf(w, "  # refused: %s may not publish %s (nats: Permissions Violation)\n", p.Publisher, p.Refused)
		fmt.Fprintf(w, "  nats -s %s %s pub %s hello\n\n", sc.url, pubTok, p.Refused)
	}
	fmt.Fprintf(w, "  # refused: not a token of the cluster's issuer (nats: Authorization Violation)\n")
	fmt.Fprintf(w, "  nats -s %s --token not-a-serviceaccount-token pub %s hello\n\n", sc.url, p.Subject)
	fmt.Fprintf(w, "  # request/reply: %s answers (leave it running) ...\n", p.Responder)
	fmt.Fprintf(w, "  nats -s %s %s reply %s 'answered by %s'\n", sc.url, respTok, p.Subject, p.Responder)
	fmt.Fprintf(w, "  # ... and %s asks from another terminal, with its private inbox prefix\n", p.Publisher)
	fmt.Fprintf(w, "  nats -s %s %s --inbox-prefix %s req %s hello\n", sc.url, pubTok, inbox, p.Subject)
	if p.InboxRefused {
		fmt.Fprintf(w, "  # without --inbox-prefix the reply subscription on _INBOX.> is refused: replies are private\n")
	}
	fmt.Fprintf(w, "\nOr once per shell: export NATS_URL=%s NATS_TOKEN=\"$(cat %s)\"; then: nats pub %s hello\n",
		sc.url, shellQuote(sc.tokenFile(p.Publisher)), p.Subject)
}

// printGo writes the nats.go connection of the plan's publisher.
func (sc scenario) printGo(w io.Writer) {
	p := sc.plan
	inbox := kube.InboxPrefix(p.Publisher.Namespace, p.Publisher.Name)
	fmt.Fprintf(w, "\nFrom Go (nats.go):\n\n")
	fmt.Fprintf(w, "  nc, err := nats.Connect(%q,\n", sc.url)
	fmt.Fprintf(w, "      // read the token at every (re)connect: it is re-minted before it expires\n")
	fmt.Fprintf(w, "      nats.TokenHandler(func() string {\n")
	fmt.Fprintf(w, "          b, _ := os.ReadFile(%q)\n", sc.tokenFile(p.Publisher))
	fmt.Fprintf(w, "          return strings.TrimSpace(string(b))\n")
	fmt.Fprintf(w, "      }),\n")
	fmt.Fprintf(w, "      nats.CustomInboxPrefix(%q), // the only inbox it may subscribe to\n", inbox)
	fmt.Fprintf(w, "      nats.MaxReconnects(-1), nats.IgnoreAuthErrorAbort(), // keep retrying while no callout answers\n")
	fmt.Fprintf(w, "  )\n")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		safe := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:,@%=", r)
		return !safe
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
