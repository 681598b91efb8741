package devmode

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/kubefake"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/internal/settings"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/kube"
	"github.com/nats-k8s-oidc-callout/nats-k8s-oidc-callout/reload"
)

// connectCluster sets up where the ServiceAccounts come from: the cluster of --kubeconfig (whose
// namespaces it settles), or else an in-memory API server the manifest is applied to.
func (in *instance) connectCluster() error {
	if in.c.Kubeconfig == "" {
		cluster, err := kubefake.NewMemoryCluster()
		if err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		in.cluster, in.client = cluster, cluster.Client()
		return nil
	}
	rc, namespaces, err := clusterConfig(in.c.Kubeconfig, in.c.Namespaces)
	if err != nil {
		return err
	}
	if in.client, err = metadata.NewForConfig(rc); err != nil {
		return fmt.Errorf("--kubeconfig: kubernetes client: %w", err)
	}
	in.c.Namespaces = strings.Join(namespaces, ",")
	return nil
}

// clusterConfig returns the client config of the kubeconfig file (one file, as given) and the
// namespaces to serve: those listed, else the kubeconfig context's.
func clusterConfig(kubeconfig, namespaceList string) (*rest.Config, []string, error) {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("--kubeconfig: %w", err)
	}
	namespaces := settings.SplitList(namespaceList)
	if len(namespaces) == 0 {
		ns, _, err := cc.Namespace()
		if err != nil {
			return nil, nil, fmt.Errorf("--kubeconfig: namespace: %w", err)
		}
		namespaces = []string{ns}
	}
	return rc, namespaces, nil
}

// listCluster mints tokens for the ServiceAccounts of the cluster's namespaces, and has each
// token refresh list them again.
func (in *instance) listCluster(ctx context.Context) error {
	in.list = func(ctx context.Context) ([]kube.ServiceAccount, error) {
		return listServiceAccounts(ctx, in.client, settings.SplitList(in.c.Namespaces))
	}
	sas, err := in.list(ctx)
	if err == nil {
		err = in.tokens.set(sas)
	}
	if err != nil {
		return fmt.Errorf("--kubeconfig: %w", err)
	}
	return nil
}

// listServiceAccounts lists the ServiceAccounts of the namespaces, in namespace order.
func listServiceAccounts(ctx context.Context, client metadata.Interface, namespaces []string) ([]kube.ServiceAccount, error) {
	var out []kube.ServiceAccount
	for _, ns := range namespaces {
		l, err := client.Resource(kube.ServiceAccountsResource).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list serviceaccounts in %s: %w", ns, err)
		}
		out = append(out, l.Items...)
	}
	return out, nil
}

// watchManifest applies the manifest to the in-memory API server and mints tokens for its
// ServiceAccounts, now and whenever the file changes: it joins the watcher the service's
// credentials reload through.
func (in *instance) watchManifest(ctx context.Context) error {
	path, defaults := in.c.Manifest, in.serve.Policy.Defaults()
	apply := func(sas []kube.ServiceAccount) error {
		res, err := kubefake.SyncServiceAccounts(ctx, in.cluster, sas)
		if err != nil {
			return err
		}
		in.log.Info("manifest applied", "path", path, "serviceaccounts", len(res.ServiceAccounts),
			"created", res.Created, "updated", res.Updated, "deleted", res.Deleted)
		logPolicies(in.log, defaults, res.ServiceAccounts)
		return in.tokens.set(res.ServiceAccounts)
	}
	f, err := reload.Add(in.watcher, "manifest", path, kube.ParseServiceAccounts, func(sas []kube.ServiceAccount) {
		if err := apply(sas); err != nil {
			in.log.Error("manifest not applied", "path", path, "error", err)
		}
	})
	if errors.Is(err, fs.ErrNotExist) && path == settings.DefaultDevManifest {
		return fmt.Errorf("--manifest: %s not found: run from the repository root or pass --manifest FILE: %w", path, err)
	}
	if err != nil {
		return fmt.Errorf("--manifest: %w", err)
	}
	if err := apply(f.Current()); err != nil {
		return fmt.Errorf("--manifest: %w", err)
	}
	return nil
}

// logPolicies reports, for each ServiceAccount, what its annotations grant, and warns about
// entries that were dropped or that make it refused: dev mode is where annotations get written.
func logPolicies(log *slog.Logger, defaults kube.PolicyDefaults, sas []kube.ServiceAccount) {
	for _, sa := range sas {
		p, err := kube.ParsePolicy(defaults, sa.Namespace, sa.Name, sa.Annotations)
		if err != nil {
			log.Warn("serviceaccount will be refused", "namespace", sa.Namespace, "serviceaccount", sa.Name, "error", err)
			continue
		}
		for _, w := range p.Warnings {
			log.Warn("serviceaccount annotation", "namespace", sa.Namespace, "serviceaccount", sa.Name, "warning", w)
		}
		log.Debug("serviceaccount permissions", "namespace", sa.Namespace, "serviceaccount", sa.Name,
			"pub_allow", p.Permissions.PubAllow, "pub_deny", p.Permissions.PubDeny,
			"sub_allow", p.Permissions.SubAllow, "sub_deny", p.Permissions.SubDeny, "responses", p.Permissions.AllowResponses)
	}
}
