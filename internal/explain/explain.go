// Package explain is the explain command: what the service grants a ServiceAccount and why,
// with the same lookup, annotation parsing and settings as a decision.
package explain

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/metadata"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/callout"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/settings"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
)

// Run looks the ServiceAccount of c up (in the cluster, or in c.Manifest) and writes what it
// is granted and the verdict on each of c.Subjects.
func Run(ctx context.Context, c settings.Explain, w io.Writer) error {
	if watched := c.Policy.WatchedNamespaces(); len(watched) > 0 && !slices.Contains(watched, c.Namespace) {
		return fmt.Errorf("namespace %s is not in WATCH_NAMESPACES (%s): its tokens are refused (serviceaccount_not_found)", c.Namespace, c.Policy.Namespaces)
	}
	// One client for the reads below, unless everything comes from --manifest.
	var client metadata.Interface
	if c.Manifest == "" {
		var err error
		if client, err = newClient(c); err != nil {
			return err
		}
	}
	sa, err := lookup(ctx, c, client)
	if err != nil {
		return err
	}
	choice, err := chooseAccount(ctx, c, client)
	if err != nil {
		return fmt.Errorf("%s/%s: its tokens are refused (%s): %w", c.Namespace, c.Name, callout.Reason(err), err)
	}
	defaults := c.Policy.Defaults()
	byAccount, err := c.AccountDefaults()
	if err != nil {
		return err
	}
	if d, ok := byAccount[choice.Account]; ok {
		defaults = d
	}
	if err := Write(w, defaults, sa, c.Subjects); err != nil {
		return err
	}
	fmt.Fprintf(w, "  account    %s (%s)\n", choice.Account, choice.Why)
	WriteRBAC(w, c)
	return nil
}

// chooseAccount picks the account as the service does, from the namespace's nats.io/account
// label: --account-label, else the Namespace read from the cluster.
func chooseAccount(ctx context.Context, c settings.Explain, client metadata.Interface) (kube.AccountChoice, error) {
	def := c.Account
	if def == "" {
		def = "NATS_ACCOUNT"
	}
	if len(c.Accounts.AllowedList()) == 0 {
		return kube.AccountChoice{Account: def, Why: "NATS_ALLOWED_ACCOUNTS is empty: namespace labels are not read"}, nil
	}
	label := fixedLabel{set: c.AccountLabel != "", value: c.AccountLabel}
	switch {
	case label.set:
	case c.Manifest != "":
		return kube.AccountChoice{Account: def, Why: "unless namespace " + c.Namespace + " carries a " + kube.LabelAccount + " label: --manifest holds no Namespaces (try --account-label)"}, nil
	default:
		ns, err := client.Resource(kube.NamespacesResource).Get(ctx, c.Namespace, metav1.GetOptions{})
		if err != nil {
			return kube.AccountChoice{}, fmt.Errorf("namespace %s: %w", c.Namespace, err)
		}
		label.value, label.set = ns.Labels[kube.LabelAccount]
	}
	var reserved []string
	if c.Account != "" {
		reserved = c.Accounts.Reserved("")
	}
	accounts, err := kube.NewAccounts(kube.AccountsConfig{Default: def, Allowed: c.Accounts.AllowedList(), Reserved: reserved, Labels: label})
	if err != nil {
		return kube.AccountChoice{}, err
	}
	return accounts.Choose(c.Namespace)
}

// fixedLabel is one namespace's label, known already.
type fixedLabel struct {
	set   bool
	value string
}

func (l fixedLabel) Label(string) (string, bool, error) { return l.value, l.set, nil }

func newClient(c settings.Explain) (metadata.Interface, error) {
	rc, err := kube.RESTConfig(c.Kube.InCluster, c.Kube.Kubeconfig)
	if err != nil {
		return nil, err
	}
	client, err := metadata.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
}

// WriteRBAC states what the sidecar must be allowed to read with c's settings, as the Helm
// values grant it.
func WriteRBAC(w io.Writer, c settings.Explain) {
	scope := "all namespaces"
	if ns := c.Policy.WatchedNamespaces(); len(ns) > 0 {
		scope = "namespaces " + strings.Join(ns, ", ")
	}
	fmt.Fprintf(w, "sidecar RBAC  serviceaccounts: get, list, watch (%s)\n", scope)
	if len(c.Accounts.AllowedList()) > 0 {
		fmt.Fprintf(w, "              namespaces: get, list, watch (%s; NATS_ALLOWED_ACCOUNTS reads their %s label)\n", scope, kube.LabelAccount)
	}
	if !c.VerifyBoundObjects {
		fmt.Fprintln(w, "              pods, nodes: none (VERIFY_BOUND_OBJECTS=false: bound pods are not checked)")
		return
	}
	fmt.Fprintf(w, "              pods: get, list, watch (%s); nodes: get (VERIFY_BOUND_OBJECTS)\n", scope)
	fmt.Fprintln(w, "              secrets: none; tokens bound to a Secret are refused (bound_object_unverifiable) without get on secrets")
	if c.BindSourceIP {
		fmt.Fprintln(w, "              BIND_SOURCE_IP: a token logs in only from its pod's IPs (pods: get)")
	}
}

// lookup reads the ServiceAccount from the manifest or the cluster.
func lookup(ctx context.Context, c settings.Explain, client metadata.Interface) (*kube.ServiceAccount, error) {
	if c.Manifest != "" {
		data, err := os.ReadFile(c.Manifest)
		if err != nil {
			return nil, fmt.Errorf("--manifest: %w", err)
		}
		sas, err := kube.ParseServiceAccounts(data)
		if err != nil {
			return nil, fmt.Errorf("--manifest %s: %w", c.Manifest, err)
		}
		for i := range sas {
			if sas[i].Namespace == c.Namespace && sas[i].Name == c.Name {
				return &sas[i], nil
			}
		}
		return nil, fmt.Errorf("%s/%s is not in %s: a token of it would be refused (serviceaccount_not_found)", c.Namespace, c.Name, c.Manifest)
	}
	sa, err := client.Resource(kube.ServiceAccountsResource).Namespace(c.Namespace).Get(ctx, c.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("serviceaccount %s/%s: %w (a token of it would be refused if it does not exist)", c.Namespace, c.Name, err)
	}
	return sa, nil
}

// Write writes the permissions of sa and the verdict on each subject.
func Write(w io.Writer, defaults kube.PolicyDefaults, sa *kube.ServiceAccount, subjects []string) error {
	if sa.DeletionTimestamp != nil {
		return fmt.Errorf("%s/%s is being deleted: its tokens are refused (serviceaccount_deleting)", sa.Namespace, sa.Name)
	}
	p, err := kube.ParsePolicy(defaults, sa.Namespace, sa.Name, sa.Annotations)
	if err != nil {
		return fmt.Errorf("%s/%s: its tokens are refused (%s): %w", sa.Namespace, sa.Name, callout.Reason(err), err)
	}
	perms := p.Permissions
	list := func(l []string) string {
		if len(l) == 0 {
			return "-"
		}
		return strings.Join(l, "  ")
	}
	fmt.Fprintf(w, "%s/%s", sa.Namespace, sa.Name)
	if sa.UID != "" {
		fmt.Fprintf(w, " (uid %s)", sa.UID)
	}
	fmt.Fprintf(w, "\n  publish    allow  %s\n             deny   %s\n", list(perms.PubAllow), list(perms.PubDeny))
	fmt.Fprintf(w, "  subscribe  allow  %s\n             deny   %s\n", list(perms.SubAllow), list(perms.SubDeny))
	responses := "one reply to each request it receives"
	if !perms.AllowResponses {
		responses = "none (nats.io/allow-responses is false)"
	}
	fmt.Fprintf(w, "  responses  %s\n  inbox      %s (nats.CustomInboxPrefix / nats --inbox-prefix)\n",
		responses, kube.InboxPrefix(sa.Namespace, sa.Name))
	for _, warning := range p.Warnings {
		fmt.Fprintf(w, "  ignored    %s\n", warning)
	}
	for _, subj := range subjects {
		if strings.ContainsAny(subj, "*>") {
			fmt.Fprintf(w, "%s: wildcards are not checked here; give a literal subject\n", subj)
			continue
		}
		fmt.Fprintf(w, "%s: publish %s, subscribe %s\n", subj, verdict(perms.AllowsPublish(subj)), verdict(perms.AllowsSubscribe(subj)))
	}
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "allowed"
	}
	return "refused"
}
