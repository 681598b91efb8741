package settings

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// Commands are the subcommands, in the order help lists them.
var Commands = []struct{ Name, Summary string }{
	{"serve", "run the auth callout service (the sidecar; the default command)"},
	{"dev", "run the service on an embedded nats-server and token issuer, no cluster needed"},
	{"explain", "show what a ServiceAccount is granted, and why"},
	{"init", "generate the service's keys, Secret, nats-server config and Helm values"},
	{"version", "print the version"},
	{"help", "show this help"},
}

// Command splits args into the subcommand and its arguments; no subcommand means serve.
func Command(args []string) (string, []string) {
	if len(args) == 0 {
		return "serve", args
	}
	switch a := args[0]; {
	case a == "-h" || a == "-help" || a == "--help":
		return "help", args[1:]
	case a == "-version" || a == "--version":
		return "version", args[1:]
	case !strings.HasPrefix(a, "-"):
		return a, args[1:]
	}
	return "serve", args
}

// PrintHelp writes the overview: the subcommands, then serve's settings.
func PrintHelp(w io.Writer) {
	fmt.Fprint(w, "nats-k8s-oidc-callout answers NATS auth callout requests with Kubernetes ServiceAccount tokens.\n\n"+
		"Usage: nats-k8s-oidc-callout [COMMAND] [flags]\n\nCommands:\n")
	for _, c := range Commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.Name, c.Summary)
	}
	fmt.Fprint(w, "\n'nats-k8s-oidc-callout COMMAND --help' shows a command's flags.\n\n")
	var c Serve
	ServeTable(&c, false).PrintUsage(w)
}

// ParseLevel reads a LOG_LEVEL value.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("LOG_LEVEL: %q must be debug, info, warn or error", s)
	}
	return l, nil
}

// Explain is every setting of the explain command: the settings of a decision it shares with
// serve, so that `kubectl exec` into the sidecar explains its own decisions.
type Explain struct {
	Kube     Kube
	Policy   Policy
	Manifest string
	// Account is NATS_ACCOUNT, Accounts the tenant account settings; AccountLabel, if set,
	// stands in for the namespace's nats.io/account label.
	Account      string
	Accounts     Accounts
	AccountLabel string
	// VerifyBoundObjects and BindSourceIP are serve's, for the RBAC explain states.
	VerifyBoundObjects, BindSourceIP bool
	// Target is NAMESPACE/SERVICEACCOUNT; Subjects are the subjects to check.
	Namespace, Name string
	Subjects        []string
}

// ExplainTable is the settings of explain, bound to c.
func ExplainTable(c *Explain, inPod bool) Table {
	s := kubeSettings(&c.Kube, inPod)
	s = append(s, policySettings(&c.Policy)...)
	s = append(s, boundSettings(&c.VerifyBoundObjects, &c.BindSourceIP)...)
	s = append(s, String(&c.Manifest, "", "manifest", "", "read the ServiceAccount from this manifest (YAML, as dev mode takes) instead of a cluster").optional())
	s = append(s, natsAccountSetting(&c.Account).optional())
	s = append(s, accountSettings(&c.Accounts)...)
	s = append(s, String(&c.AccountLabel, "", "account-label", "", "take this as the namespace's nats.io/account label instead of reading the Namespace (e.g. with --manifest)").optional())
	return Table{
		Command: "explain",
		Usage: "Usage: nats-k8s-oidc-callout explain [flags] NAMESPACE/SERVICEACCOUNT [SUBJECT...]\n\n" +
			"Prints the NATS permissions the service grants the ServiceAccount (from its annotations and the\n" +
			"defaults), the annotation entries it ignores, and for each SUBJECT whether publishing and\n" +
			"subscribing to it are allowed. Reads the ServiceAccount from the cluster, or from --manifest.\n\n",
		Settings: s,
	}
}

// ParseExplain reads explain's settings and arguments.
func ParseExplain(args []string, lookup func(string) (string, bool), output io.Writer) (Explain, error) {
	var c Explain
	t := ExplainTable(&c, inPod(lookup))
	p, err := t.Parse(args, lookup, output)
	if err != nil {
		return c, err
	}
	if len(p.Args()) < 1 {
		t.PrintUsage(output)
		return c, errors.New("explain: NAMESPACE/SERVICEACCOUNT is required")
	}
	ns, name, ok := strings.Cut(p.Args()[0], "/")
	if !ok || ns == "" || name == "" {
		return c, fmt.Errorf("explain: %q is not NAMESPACE/SERVICEACCOUNT", p.Args()[0])
	}
	c.Namespace, c.Name, c.Subjects = ns, name, p.Args()[1:]
	if err := c.Policy.Validate(); err != nil {
		return c, err
	}
	_, err = c.AccountDefaults()
	return c, err
}

// AccountDefaults are the validated per-account defaults (ACCOUNT_DEFAULTS).
func (c Explain) AccountDefaults() (map[string]kube.PolicyDefaults, error) {
	return c.Accounts.Validate(c.Account, nkeys.IsValidPublicAccountKey(c.Account), c.Policy.Defaults())
}

// Dev is every setting of the dev command. Dev mode reads no environment variables, so that
// it behaves the same on every machine.
type Dev struct {
	Manifest   string
	Kubeconfig string
	Namespaces string
	Port       int
	HTTPAddr   string
	Dir        string
	XKey       bool
	Check      bool
	TokenTTL   time.Duration
	Log        Log
}

// DefaultDevManifest is the ServiceAccounts dev mode serves unless told otherwise.
const DefaultDevManifest = "examples/serviceaccounts.yaml"

// DevTable is the settings of dev, bound to c.
func DevTable(c *Dev) Table {
	s := []*Setting{
		String(&c.Manifest, "", "manifest", DefaultDevManifest, "ServiceAccounts to serve (YAML); edits apply to the next connection"),
		String(&c.Kubeconfig, "", "kubeconfig", "", "use the ServiceAccounts of this cluster instead of a manifest; tokens are still minted locally, with their real uids, for those listed at start and at each token refresh").optional(),
		String(&c.Namespaces, "", "namespaces", "", "with --kubeconfig: comma-separated namespaces to serve (default: the kubeconfig context's)").optional(),
		Int(&c.Port, "", "port", 4222, "NATS port on 127.0.0.1; a busy port falls back to a free one; 0 picks a free one"),
		String(&c.HTTPAddr, "", "http-addr", "127.0.0.1:8080", "address for /healthz, /readyz and /metrics; a busy port falls back to a free one"),
		String(&c.Dir, "", "dir", "", "directory for tokens, keys and the server config (default: a new temporary directory, removed on exit)").optional(),
		Bool(&c.XKey, "", "xkey", true, "encrypt callout requests and responses with an xkey, as production should"),
		Bool(&c.Check, "", "check", false, "run the scenario as a self-test with nats.go clients, print PASS/FAIL per step and exit"),
		Duration(&c.TokenTTL, "", "token-ttl", time.Hour, "lifetime of the minted tokens; they are re-minted at 80% of it, as the kubelet does"),
	}
	s = append(s, logSettings(&c.Log, "text")...)
	return Table{
		Command: "dev",
		Usage: "Usage: nats-k8s-oidc-callout dev [flags]\n\n" +
			"Runs the callout service against an embedded nats-server on 127.0.0.1, with a local token issuer\n" +
			"and the ServiceAccounts of a manifest (or of a real cluster with --kubeconfig), and prints\n" +
			"commands to try it. --check runs the same scenario as a self-test.\n\n",
		Settings: s,
		NoEnv:    true,
	}
}

// ParseDev reads dev's flags and validates them.
func ParseDev(args []string, output io.Writer) (Dev, error) {
	var c Dev
	p, err := DevTable(&c).ParseNoArgs(args, nil, output)
	if err != nil {
		return c, err
	}
	if c.Check && !p.IsSet("port") {
		c.Port = 0 // a self-test must not depend on, or clash with, a running dev instance
	}
	if c.Check && !p.IsSet("http-addr") {
		c.HTTPAddr = "127.0.0.1:0"
	}
	switch {
	case c.Kubeconfig != "" && p.IsSet("manifest"):
		return c, errors.New("--manifest and --kubeconfig exclude each other: ServiceAccounts come from one or the other")
	case c.Namespaces != "" && c.Kubeconfig == "":
		return c, errors.New("--namespaces needs --kubeconfig; a manifest names its own namespaces")
	case c.Port < 0 || c.Port > 65535:
		return c, fmt.Errorf("--port: %d is not a port number", c.Port)
	case c.TokenTTL < 10*time.Minute:
		return c, fmt.Errorf("--token-ttl: %s is too short (minimum 10m; Kubernetes' own minimum)", c.TokenTTL)
	case c.Log.Format != "json" && c.Log.Format != "text":
		return c, fmt.Errorf("--log-format: %q must be json or text", c.Log.Format)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return c, fmt.Errorf("--http-addr: %q is not host:port (e.g. 127.0.0.1:8080)", c.HTTPAddr)
	}
	if _, err := ParseLevel(c.Log.Level); err != nil {
		return c, fmt.Errorf("--log-level: %q must be debug, info, warn or error", c.Log.Level)
	}
	return c, nil
}
